"""eportd's server bootstrap: socket path and safety, per-call peer credentials, logging."""

from eport.daemon.server.bootstrap import CARD_SERVICE_NAME, RunningServer, run_server
from eport.daemon.server.peer_proxy import PeerCred, PeerRegistry, peer_of
from eport.daemon.server.socket_path import ServerConfigError, resolve_socket_path

__all__ = [
    "CARD_SERVICE_NAME",
    "PeerCred",
    "PeerRegistry",
    "RunningServer",
    "ServerConfigError",
    "peer_of",
    "resolve_socket_path",
    "run_server",
]
