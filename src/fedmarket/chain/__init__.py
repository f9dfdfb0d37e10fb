"""The on-chain market: Vyper contracts, the backends they run on, and a typed client.

Typical use::

    from fedmarket.chain import embedded, deploy
    chain = embedded()
    market, token = deploy(chain.w3, chain.accounts[0], grace_seconds=3600)
    task = market.as_(requester).create_task(...).value
"""

from fedmarket.chain.allocation import Allocation, Fill, InfeasibleAllocation, Offer, allocate
from fedmarket.chain.backends import DEV_MNEMONIC, Anvil, Chain, embedded, find_anvil, rpc
from fedmarket.chain.client import (
    BidView,
    Clock,
    GasEntry,
    GasLog,
    MarketClient,
    Receipt,
    Side,
    Solvency,
    Task,
    TaskState,
    TokenClient,
    deploy,
)
from fedmarket.chain.compile import CompiledContract, CompilerError, compile_contract
from fedmarket.errors import ChainError, ContractRevert

__all__ = [
    "DEV_MNEMONIC",
    "Allocation",
    "Anvil",
    "BidView",
    "Chain",
    "ChainError",
    "Clock",
    "CompiledContract",
    "CompilerError",
    "ContractRevert",
    "Fill",
    "GasEntry",
    "GasLog",
    "InfeasibleAllocation",
    "MarketClient",
    "Offer",
    "Receipt",
    "Side",
    "Solvency",
    "Task",
    "TaskState",
    "TokenClient",
    "allocate",
    "compile_contract",
    "deploy",
    "embedded",
    "find_anvil",
    "rpc",
]
