"""The party side's one dispatcher: untrusted requests, simulated faults, state across restarts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedmarket.chain.backends import dev_keys
from fedmarket.chain.memory import memory_chain
from fedmarket.data import load_dataset
from fedmarket.parties import OwnerPlan, ProcessorPlan, make_node
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.messages import EncryptedModel, TaskAnnouncement
from fedmarket.run import run_task
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def nodes() -> tuple[PartyNode, PartyNode]:
    chain, market, token = memory_chain(dev_keys(3), grace_seconds=100)
    data = load_dataset("sklearn:breast_cancer")
    crypto = Plaintext()
    o, p = chain.accounts[1], chain.accounts[2]
    owner = make_node("o", o, market.as_(o), token.as_(o), crypto,
                      owner=OwnerPlan(data.X[:50], data.y[:50], 50, 1))  # fmt: skip
    processor = make_node("p", p, market.as_(p), token.as_(p), crypto,
                          processor=ProcessorPlan(50, 1, 0, "crash@0"))  # fmt: skip
    return owner, processor


def test_unknown_actions_wrong_roles_and_garbage_get_an_error_not_an_exception() -> None:
    owner, _ = nodes()
    assert owner.handle("rm -rf", Envelope()) == Envelope.error("unknown action 'rm -rf'")
    reply = owner.handle("setup", Envelope())  # a processor's step
    assert reply is not None and reply.problem is not None and "processes none" in reply.problem
    reply = owner.handle("announce", Envelope(frames=(b"\x00not a frame",)))
    assert reply is not None and reply.problem is not None and "requester" in reply.problem
    # a well-formed announcement of a task that is not on chain is refused
    fake = TaskAnnouncement(task_id=0, market="0x" + "3a" * 20, spec_json=b"{}",
                            public_context=b"x")  # fmt: skip
    reply = owner.handle("announce", Envelope.of(fake))
    assert reply is not None and reply.problem is not None and "invalid spec" in reply.problem


def test_a_crashed_processor_stays_silent() -> None:
    _, processor = nodes()
    model = EncryptedModel(task_id=0, epoch=0, payload=b"")
    assert processor.handle("model", Envelope.of(model)) is None


class Restarting(LocalTransport):
    """Every action reaches a freshly built node that restores the state the last one saved:
    what a Flower node does (a new process per message), here in one process."""

    def __init__(self, nodes: list[PartyNode]) -> None:
        super().__init__(nodes)
        self.saved = {a: n.state() for a, n in self.nodes.items()}
        self.restarts = 0

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        for address in requests:
            old = self.nodes.get(address.lower())
            if old is None:
                continue
            old.close()
            fresh = PartyNode(old.name, old.new_roles)
            fresh.restore(self.saved[address.lower()])
            self.nodes[address.lower()] = fresh
            self.restarts += 1
        replies = super().ask(action, requests, timeout=timeout)
        for address in requests:
            if address.lower() in self.nodes:
                self.saved[address.lower()] = self.nodes[address.lower()].state()
        return replies


def test_a_party_restarted_before_every_message_plays_the_task_the_same(tmp_path: Path) -> None:
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 3
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 64
    data["run"]["processors"][1]["attack"] = "stale"  # its memory must survive too
    spec = SpecFile.model_validate(data)
    made: list[Restarting] = []

    def restarting(nodes: list[PartyNode]) -> Restarting:
        made.append(Restarting(nodes))
        return made[-1]

    kw = {"base": EXAMPLES, "workers": 0, "crypto": Plaintext(), "chain_url": "memory"}
    steady = run_task(spec, **kw).report  # type: ignore[arg-type]
    again = run_task(spec, transport=restarting, **kw).report  # type: ignore[arg-type]
    assert made and made[0].restarts > 20
    assert [(e.metric, e.on_time, e.flagged) for e in again.epochs] == [
        (e.metric, e.on_time, e.flagged) for e in steady.epochs
    ]
    assert [(t.party, t.net) for t in again.tokens] == [(t.party, t.net) for t in steady.tokens]
    assert again.flags and again.flags[0]["party"] == "processor2"  # the replayer was caught
