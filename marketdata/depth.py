"""(being written)"""

from exchange.matching import BatchOutcome
from exchange.streams import Message


def depth_apply(outcome: BatchOutcome) -> list[Message]:
    return []
