"""Pulse's schema registry speaks the Confluent protocol: Confluent's own
Python client registers, serializes, deserializes and is refused an
incompatible schema with Confluent's error code. Run through `./dev test`."""

import hashlib
import uuid

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

READING_V1 = """{"type": "record", "name": "Reading", "namespace": "test",
  "fields": [{"name": "device", "type": "string"}, {"name": "value", "type": "double"}]}"""
READING_V2 = """{"type": "record", "name": "Reading", "namespace": "test",
  "fields": [{"name": "device", "type": "string"}, {"name": "value", "type": "double"},
             {"name": "unit", "type": ["null", "string"], "default": null}]}"""
READING_BREAKING = """{"type": "record", "name": "Reading", "namespace": "test",
  "fields": [{"name": "device", "type": "long"}]}"""


def registry_settings(services, **settings):
    port = services.free_port()
    return port, dict(
        PULSE_REGISTRY_LISTEN=f"127.0.0.1:{port}",
        # /metrics has a port of its own; any free one, so runs never collide.
        PULSE_REGISTRY_METRICS_LISTEN="127.0.0.1:0",
        PULSE_REGISTRY_TOPIC=f"_schemas_py_{uuid.uuid4().hex}",
        **settings,
    )


@pytest.fixture(scope="module")
def registry_url(services):
    port, settings = registry_settings(services)
    return services.start("pulse-registry", port, **settings)


@pytest.fixture(scope="module")
def guarded_registry_url(services, tmp_path_factory):
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()
    path = tmp_path_factory.mktemp("registry") / "credentials.toml"
    path.write_text(
        f'[[users]]\nname = "reader"\nrole = "read"\nsha256 = "{sha("r-secret")}"\n\n'
        f'[[users]]\nname = "writer"\nrole = "write"\nsha256 = "{sha("w-secret")}"\n'
    )
    port, settings = registry_settings(services, PULSE_REGISTRY_CREDENTIALS=str(path))
    return services.start("pulse-registry", port, **settings)


def test_register_serialize_deserialize(registry_url):
    client = SchemaRegistryClient({"url": registry_url})
    topic = "readings"
    serializer = AvroSerializer(client, READING_V1)
    ctx = SerializationContext(topic, MessageField.VALUE)
    data = serializer({"device": "d-1", "value": 21.5}, ctx)
    assert data[0] == 0, "Confluent magic byte"
    schema_id = int.from_bytes(data[1:5], "big")

    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema_id == schema_id
    assert registered.version == 1

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    assert deserializer(data, ctx) == {"device": "d-1", "value": 21.5}

    looked_up = client.lookup_schema(f"{topic}-value", Schema(READING_V1, "AVRO"))
    assert (looked_up.schema_id, looked_up.version) == (schema_id, 1)


def test_compatible_evolution_and_incompatible_rejection(registry_url):
    client = SchemaRegistryClient({"url": registry_url})
    subject = "evolving-value"
    assert client.get_compatibility() == "BACKWARD"
    v1 = client.register_schema(subject, Schema(READING_V1, "AVRO"))
    assert client.test_compatibility(subject, Schema(READING_V2, "AVRO")) is True
    v2 = client.register_schema(subject, Schema(READING_V2, "AVRO"))
    assert v2 != v1
    assert client.get_versions(subject) == [1, 2]

    assert client.test_compatibility(subject, Schema(READING_BREAKING, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(READING_BREAKING, "AVRO"))
    assert err.value.http_status_code == 409
    assert err.value.error_code == 409
    assert client.get_versions(subject) == [1, 2], "nothing half-registered"

    # Data written with v1 reads with v2 as the reader schema.
    ctx = SerializationContext("evolving", MessageField.VALUE)
    writer = AvroSerializer(client, READING_V1, conf={"auto.register.schemas": False, "use.latest.version": False})
    data = writer({"device": "d-2", "value": 1.0}, ctx)
    reader = AvroDeserializer(client, READING_V2)
    assert reader(data, ctx) == {"device": "d-2", "value": 1.0, "unit": None}


def test_subject_config_and_errors(registry_url):
    client = SchemaRegistryClient({"url": registry_url})
    subject = "configured-value"
    client.register_schema(subject, Schema(READING_V1, "AVRO"))
    assert client.set_compatibility(subject, "NONE")["compatibility"] == "NONE"
    assert client.get_compatibility(subject) == "NONE"
    client.register_schema(subject, Schema(READING_BREAKING, "AVRO"))
    assert client.get_versions(subject) == [1, 2]

    with pytest.raises(SchemaRegistryError) as err:
        client.get_version("no-such-subject", 1)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as err:
        client.set_compatibility(subject, "SIDEWAYS")
    assert (err.value.http_status_code, err.value.error_code) == (422, 42203)

    deleted = client.delete_subject(subject)
    assert deleted == [1, 2]
    assert subject not in client.get_subjects()


def test_basic_auth_roles(guarded_registry_url):
    url = guarded_registry_url
    writer = SchemaRegistryClient({"url": url, "basic.auth.user.info": "writer:w-secret"})
    reader = SchemaRegistryClient({"url": url, "basic.auth.user.info": "reader:r-secret"})
    anonymous = SchemaRegistryClient({"url": url})
    schema_id = writer.register_schema("guarded-value", Schema(READING_V1, "AVRO"))
    assert reader.get_versions("guarded-value") == [1]
    assert reader.get_schema(schema_id).schema_str == READING_V1

    with pytest.raises(SchemaRegistryError) as err:
        reader.register_schema("guarded-value", Schema(READING_V2, "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (403, 40301)
    with pytest.raises(SchemaRegistryError) as err:
        anonymous.get_subjects()
    assert (err.value.http_status_code, err.value.error_code) == (401, 40101)
    assert requests.get(f"{url}/metrics", auth=("reader", "r-secret"), timeout=5).status_code == 404
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
