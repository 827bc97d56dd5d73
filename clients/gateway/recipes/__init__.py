"""Recipes on top of the E-port client's websocket API: signing CEB XML messages and
announcement-179 payment data on the card, and verifying signed CEB messages.
See docs/recipes.md."""

from eport.clients.gateway.recipes.ceb_xml import VerificationResult, sign_ceb_xml, verify_ceb_xml
from eport.clients.gateway.recipes.errors import CardProblem, GatewayReplyError, RecipeError
from eport.clients.gateway.recipes.payment179 import (
    parse_request,
    sign_payment179,
    signing_string,
)
from eport.clients.gateway.recipes.signer import CardSigner, GatewaySigner

__all__ = [
    "CardProblem",
    "CardSigner",
    "GatewayReplyError",
    "GatewaySigner",
    "RecipeError",
    "VerificationResult",
    "parse_request",
    "sign_ceb_xml",
    "sign_payment179",
    "signing_string",
    "verify_ceb_xml",
]
