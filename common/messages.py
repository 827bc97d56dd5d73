"""Texts for people that more than one layer says: the daemon, the `eport` kit and `eport doctor`
must give the same remedy for the same situation, and none of them may import another's
catalogue (clients reach the daemon only over gRPC)."""

from __future__ import annotations

from eport.common.text import Bilingual

# The one wording of "take the card to the E-port card centre"; what to have done there follows.
CARD_CENTRE = Bilingual("请携带卡片到电子口岸制卡中心办理",
                        "take the card to the E-port card centre (制卡中心)")
CARD_CENTRE_UNBLOCK = Bilingual(CARD_CENTRE.zh + "解锁", CARD_CENTRE.en + " to have it unblocked")
CARD_CENTRE_RENEW = Bilingual(CARD_CENTRE.zh + "证书更新(延期)",
                              CARD_CENTRE.en + " to renew the certificate")
