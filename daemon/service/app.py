"""The card service the gRPC servicer calls: card info, PIN, sessions, certificates, signing
and decryption, built in layers (app_core, app_sessions, app_presence, app_pin, app_crypto).
"""

from __future__ import annotations

from typing import Any

import grpc

from eport.daemon.config import DaemonSettings
from eport.daemon.service.app_core import CardSelector, PinState, ReaderView
from eport.daemon.service.app_crypto import KeyOperations

__all__ = ["CardSelector", "CardServiceApp", "PinState", "ReaderView", "build_service"]


class CardServiceApp(KeyOperations):
    # ---- lifecycle (used by eport.daemon.main) ----

    def register(self, server: grpc.Server) -> None:
        from eport.daemon.service.servicer import add_to_server

        add_to_server(self, server)

    def attach_health(self, health_servicer: Any) -> None:
        self._health = health_servicer
        self._update_health()



def build_service(settings: DaemonSettings) -> CardServiceApp:
    return CardServiceApp(settings)
