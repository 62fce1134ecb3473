"""What a Reflector hands its consumer, recorded: the watch tests on the real server (tests/k8s) and on the
fake (tests/cluster) check the events they saw."""

import threading


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, kind, type_, obj):
        with self.lock:
            self.events.append((type_, obj["metadata"]["name"]))

    def seen(self, *event):
        with self.lock:
            return tuple(event) in self.events
