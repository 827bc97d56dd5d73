"""Stacked APDU processing: GET RESPONSE for 61xx, a retry for 6Cxx, command chaining."""

from __future__ import annotations

from eport.cardlib.pcsc.connection import SmartCardConnection
from eport.common.apdu import CommandApdu
from eport.common.piv import CLA_CHAINING, Ins

_SHORT_MAX = 255
_MAX_GET_RESPONSE = 1024  # a card that keeps answering 61xx forever must not hang us


class ApduProcessor:
    def __init__(self, connection: SmartCardConnection) -> None:
        self.connection = connection

    def transmit(self, command: CommandApdu) -> tuple[bytes, int]:
        """Send `command` (chained if its data exceeds a short APDU); collect the whole reply."""
        data = command.data
        # Chaining: all but the last block carry CLA b5; each must answer 9000.
        while len(data) > _SHORT_MAX:
            block, data = data[:_SHORT_MAX], data[_SHORT_MAX:]
            part = CommandApdu(command.cla | CLA_CHAINING, *command.header, block)
            _, sw = self.connection.send_and_receive(part.to_bytes())
            if sw != 0x9000:
                return b"", sw
        last = CommandApdu(command.cla, *command.header, data, command.le)
        response, sw = self.connection.send_and_receive(last.to_bytes())
        if sw >> 8 == 0x6C:  # wrong Le: the card says how many bytes it has
            retry = CommandApdu(command.cla, *command.header, data, (sw & 0xFF) or 256)
            response, sw = self.connection.send_and_receive(retry.to_bytes())
        collected = bytearray(response)
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > _MAX_GET_RESPONSE:
                break
            more = CommandApdu(0x00, Ins.GET_RESPONSE, 0, 0, le=(sw & 0xFF) or 256)
            response, sw = self.connection.send_and_receive(more.to_bytes())
            collected += response
        return bytes(collected), sw
