#!/usr/bin/env python3
"""Promotes image digests DEV -> UAT -> PRD, only after they ran in the
environment before.

  k8s/promote.py set dev SERVICE DIGEST   a new build enters DEV
  k8s/promote.py certify ENV              ENV's deployment passed its checks:
                                          record its digests as certified there
  k8s/promote.py promote FROM TO          copy FROM's digests to TO (dev->uat,
                                          uat->prd), refusing any digest not
                                          certified in FROM

Digests live in k8s/overlays/ENV/kustomization.yaml; certifications in
k8s/promotion/ENV.certified, one "service digest" per line. Commit both.
Only the standard library is used, so any python3 runs it.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ORDER = ["dev", "uat", "prd"]
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
ENTRY = re.compile(
    r"(  - name: pulse/(?P<service>[a-z-]+)\n    newName: [^\n]+\n    digest: )(?P<digest>sha256:[0-9a-f]{64})"
)


class PromotionError(Exception):
    pass


def overlay(env):
    return ROOT / "overlays" / env / "kustomization.yaml"


def digests(env):
    found = {m["service"]: m["digest"] for m in ENTRY.finditer(overlay(env).read_text())}
    if not found:
        raise PromotionError(f"no image digests in {overlay(env)}")
    return found


def write_digests(env, new):
    text = overlay(env).read_text()
    text = ENTRY.sub(lambda m: m.group(1) + new.get(m["service"], m["digest"]), text)
    overlay(env).write_text(text)


def certified(env):
    path = ROOT / "promotion" / f"{env}.certified"
    if not path.exists():
        return set()
    return {tuple(line.split()[:2]) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def cmd_set(env, service, digest):
    if env != "dev":
        raise PromotionError("new builds enter dev only; use promote for uat and prd")
    if not DIGEST.match(digest):
        raise PromotionError(f"not an image digest: {digest}")
    if service not in digests(env):
        raise PromotionError(f"unknown service {service}; known: {', '.join(sorted(digests(env)))}")
    write_digests(env, {service: digest})


def cmd_certify(env):
    if env not in ORDER:
        raise PromotionError(f"unknown environment {env}")
    have = certified(env)
    path = ROOT / "promotion" / f"{env}.certified"
    with path.open("a") as f:
        for service, digest in sorted(digests(env).items()):
            if (service, digest) not in have:
                f.write(f"{service} {digest}\n")


def cmd_promote(source, target):
    if source not in ORDER or target not in ORDER or ORDER.index(target) != ORDER.index(source) + 1:
        raise PromotionError(f"can only promote one step: dev->uat or uat->prd, not {source}->{target}")
    moving = digests(source)
    ok = certified(source)
    missing = [f"{s} {d}" for s, d in sorted(moving.items()) if (s, d) not in ok]
    if missing:
        raise PromotionError(f"not certified in {source}, refusing to promote to {target}: " + "; ".join(missing))
    write_digests(target, moving)


def main(argv):
    commands = {"set": (cmd_set, 3), "certify": (cmd_certify, 1), "promote": (cmd_promote, 2)}
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = commands[argv[0]]
    try:
        fn(*argv[1:])
    except PromotionError as e:
        print(f"promote: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
