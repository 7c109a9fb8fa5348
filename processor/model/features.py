"""Per-device rolling features exactly as the processor computes them
(processor/src/state/device.rs): EWMA mean and variance, z-score against the state
before the reading, delta from the last reading, seconds since the last
event; and the ids of the latest events, to drop clients' retries. Used to
train and evaluate the model and by the Python reference pipeline.
"""

ALPHA = 0.1
WARMUP = 10
DEDUP_WINDOW = 16
NAN = float("nan")


class Device:
    __slots__ = ("seq", "last_ms", "readings", "recent")

    def __init__(self):
        self.seq, self.last_ms, self.readings, self.recent = 0, None, {}, []

    def observe(self, event_id, t_ms, readings):
        """The event's features by name, or None for a retry of a recent event."""
        if event_id in self.recent:
            return None
        self.recent.append(event_id)
        if len(self.recent) > DEDUP_WINDOW:
            self.recent.pop(0)
        self.seq += 1
        features = {"gap_s": NAN if self.last_ms is None else (t_ms - self.last_ms) / 1000}
        self.last_ms = t_ms
        for name, x in readings.items():
            r = self.readings.setdefault(name, [0.0, 0.0, 0.0, 0])  # mean, var, last, count
            mean, var, last, count = r
            if count == 0:
                delta = z = NAN
                mean, var = x, 0.0
            else:
                sd = var**0.5
                z = (x - mean) / sd if count >= WARMUP and sd > 0 else NAN
                delta = x - last
                diff = x - mean
                incr = ALPHA * diff
                mean += incr
                var = (1 - ALPHA) * (var + diff * incr)
            r[:] = [mean, var, x, count + 1]
            features[f"{name}.delta"] = delta
            features[f"{name}.z"] = z
            features[f"{name}.ewma"] = mean
        return features
