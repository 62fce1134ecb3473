"""A datapath that only records what it is handed: cluster-mode tests check the state the node would program
without a kernel (the real datapath has its own root tests)."""


class RecordingDatapath:
    def __init__(self):
        self.states = []

    def apply(self, state):
        self.states.append(state)

    @property
    def revision(self):
        """As the kernel's: the revision of the last state handed over."""
        return self.states[-1].revision if self.states else 0
