"""USB enumeration of smart-card readers and E-port USB keys, through pyusb.

This module is the only one in the project that imports pyusb, and it imports it inside functions:
pyusb and libusb are optional, and the daemon must still start (and say what is missing) on a
machine that has neither. The daemon talks to cards through pcscd; this scan only answers "what
is plugged in, and may we open it?" for diagnostics (`eport doctor`, the daemon's status), e.g. a
key that pcscd does not show because udev leaves its device node to root.

Only devices that match are opened (to read their manufacturer and product strings): a scan never
touches unrelated devices such as keyboards, and never raises for a device it cannot open.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

CCID_CLASS = 0x0B  # USB class "Smart Card" (CCID / ICCD)

NO_PYUSB_REASON = (
    "pyusb 未安装，无法枚举 USB 设备；请运行 pip install pyusb / "
    "pyusb is not installed, USB devices cannot be listed: pip install pyusb "
    "(or install this project with its [usb] extra)"
)
NO_LIBUSB_REASON = (
    "找不到 libusb，无法枚举 USB 设备；请运行 apt-get install libusb-1.0-0 / "
    "libusb-1.0 not found, USB devices cannot be listed: apt-get install libusb-1.0-0"
)


class UsbDeviceKind(StrEnum):
    CCID_READER = "ccid-reader"
    EPORT_KEY = "eport-key"


@dataclass(frozen=True)
class UsbDeviceInfo:
    vendor_id: int
    product_id: int
    bus: int
    address: int
    manufacturer: str  # empty when the device could not be opened or has no such string
    product: str
    kind: UsbDeviceKind
    accessible: bool  # False: the device node exists but this process may not open it (udev)


@dataclass(frozen=True)
class UsbScan:
    available: bool  # False: pyusb or libusb is missing (or enumeration failed); see the reason
    unavailable_reason: str  # one sentence in Chinese and one in English, with a remedy
    devices: tuple[UsbDeviceInfo, ...]


@dataclass(frozen=True)
class KnownKey:
    """A USB key model (or a whole vendor, product_id None) made by an E-port IKEY supplier."""

    vendor_id: int
    product_id: int | None
    maker: str
    model: str
    source: str  # where the id was checked, so a later reader can re-verify it


# A starting list, not a complete one. Every id below was checked against libccid's
# readers/supported_readers.txt (the CCID driver pcscd uses) or the usb.ids database; that these
# makers supply E-port IKEYs is what the E-port project was told, not something verified here.
# Vendor-wide entries (product_id None) are a diagnostic hint ("this may be your key"), never a
# driver binding: a CCID-class device of the same vendor is still reported as a reader.
# Deliberately absent, because the ids suggested for them did not check out:
# - Longmai (龙脉) 0x055C: usb.ids names 0x055C "Proton Electronic Ind."; Longmai's real vendor
#   id is unverified. Its CCID-class keys are found anyway by the class check.
# - HED/Haitai 0x1A2C: not HED in any source checked; HED's (华大) CCID keys use 0x1677 (below).
KNOWN_EPORT_KEYS: tuple[KnownKey, ...] = (
    KnownKey(0x096E, 0x0807, "Feitian (飞天诚信)", "ePass2003", "libccid supported_readers"),
    KnownKey(0x096E, 0x080A, "Feitian (飞天诚信)", "ePass2003Auto", "libccid supported_readers"),
    KnownKey(0x096E, 0x080F, "Feitian (飞天诚信)", "eJAVA Token", "libccid supported_readers"),
    KnownKey(0x096E, None, "Feitian (飞天诚信)", "", "usb.ids: Feitian Technologies, Inc."),
    KnownKey(0x163C, 0x0406, "Watchdata (握奇)", "WatchCNPC USB CCID Key",
             "libccid supported_readers"),
    KnownKey(0x163C, 0x0407, "Watchdata (握奇)", "USB Key", "libccid supported_readers"),
    KnownKey(0x163C, 0x0A03, "Watchdata (握奇)", "W5181", "libccid supported_readers"),
    KnownKey(0x163C, None, "Watchdata (握奇)", "", "libccid supported_readers"),
    KnownKey(0x1677, 0x0025, "HED / HDZB (华大)", "uKeyCI800-K18", "libccid supported_readers"),
    KnownKey(0x1677, 0x0312, "HED (华大)", "CIU98320B CMS", "libccid supported_readers (HED fork)"),
    KnownKey(0x1677, None, "HED (华大)", "", "libccid supported_readers"),
    KnownKey(0xA625, 0x0801, "Tianyu (天喻)", "CCID SmartKey", "libccid supported_readers"),
)

FindDevices = Callable[..., Iterable[Any]]
GetString = Callable[[Any, int], str | None]


def known_key(vendor_id: int, product_id: int) -> KnownKey | None:
    """The table entry for this device: an exact product match first, then a vendor-wide one."""
    vendor_match = None
    for key in KNOWN_EPORT_KEYS:
        if key.vendor_id != vendor_id:
            continue
        if key.product_id == product_id:
            return key
        if key.product_id is None:
            vendor_match = key
    return vendor_match


def scan_usb(
    backend: object | None = None,
    *,
    find: FindDevices | None = None,
    get_string: GetString | None = None,
) -> UsbScan:
    """List CCID readers and known E-port keys on the USB buses; never raises for a device.

    `find` and `get_string` default to pyusb's `usb.core.find` and `usb.util.get_string`; tests
    pass fakes shaped like pyusb's devices. `backend` is handed to `find` (pyusb's backend object).
    """
    usb_core, usb_util = _import_pyusb()
    if usb_core is None and (find is None or get_string is None):
        return UsbScan(False, NO_PYUSB_REASON, ())
    find_devices: FindDevices = find if find is not None else usb_core.find
    read_string: GetString = get_string if get_string is not None else usb_util.get_string
    # pyusb opens a handle to read strings; release it when pyusb's own reader was used.
    release = usb_util.dispose_resources if get_string is None else None
    no_backend: tuple[type[BaseException], ...] = (
        (usb_core.NoBackendError,) if usb_core is not None else ()
    )

    try:
        # find() looks for the libusb backend when called and enumerates while iterated.
        candidates = list(find_devices(find_all=True, backend=backend))
    except no_backend:
        return UsbScan(False, NO_LIBUSB_REASON, ())
    except (OSError, ValueError) as exc:  # pyusb's USBError is an OSError
        logger.warning("USB enumeration failed: %s", exc)
        return UsbScan(False, _enumeration_failed_reason(exc), ())

    devices: list[UsbDeviceInfo] = []
    for device in candidates:
        info = _describe(device, read_string)
        if info is None:
            continue  # not ours: it was never opened, so there is nothing to release
        if release is not None:
            _release(device, release)
        devices.append(info)
    devices.sort(key=lambda d: (d.bus, d.address))
    return UsbScan(True, "", tuple(devices))


def _describe(device: Any, read_string: GetString) -> UsbDeviceInfo | None:
    """The device's entry if it is a reader or a known key, else None (not opened then)."""
    try:
        vendor_id = int(device.idVendor)
        product_id = int(device.idProduct)
    except (AttributeError, TypeError, ValueError):
        return None  # not a device descriptor we understand; skip rather than fail the scan
    key = known_key(vendor_id, product_id)
    is_ccid = _is_ccid(device)
    if key is not None and key.product_id is not None:
        kind = UsbDeviceKind.EPORT_KEY  # an exact model match beats the class (keys are CCID too)
    elif is_ccid:
        kind = UsbDeviceKind.CCID_READER
    elif key is not None:
        kind = UsbDeviceKind.EPORT_KEY  # vendor-only match: a non-CCID key of a known maker
    else:
        return None

    manufacturer, product, accessible = _read_strings(device, read_string)
    return UsbDeviceInfo(
        vendor_id=vendor_id,
        product_id=product_id,
        bus=int(getattr(device, "bus", 0) or 0),
        address=int(getattr(device, "address", 0) or 0),
        manufacturer=manufacturer,
        product=product,
        kind=kind,
        accessible=accessible,
    )


def _is_ccid(device: Any) -> bool:
    if getattr(device, "bDeviceClass", None) == CCID_CLASS:
        return True
    # Most readers declare their class per interface (device class 0x00), so walk them. A config
    # descriptor that cannot be read leaves the device descriptor's answer.
    try:
        for config in device.configurations():
            for interface in config.interfaces():
                if getattr(interface, "bInterfaceClass", None) == CCID_CLASS:
                    return True
    except (OSError, ValueError, AttributeError, TypeError, NotImplementedError) as exc:
        logger.debug("cannot read the configuration of %s: %s", _name(device), exc)
    return False


def _read_strings(device: Any, read_string: GetString) -> tuple[str, str, bool]:
    """(manufacturer, product, accessible). Reading strings needs the device opened."""
    strings: list[str] = []
    for attribute in ("iManufacturer", "iProduct"):
        index = getattr(device, attribute, 0) or 0
        if not index:
            strings.append("")  # the device has no such string: nothing to open
            continue
        try:
            strings.append(read_string(device, int(index)) or "")
        except OSError as exc:  # pyusb's USBError
            if exc.errno in (errno.EACCES, errno.EPERM):
                return "", "", False
            logger.debug("cannot read string %s of %s: %s", attribute, _name(device), exc)
            strings.append("")
        except ValueError as exc:
            # pyusb reads the LANGID table first and swallows its USBError: EACCES on Linux
            # surfaces as ValueError("The device has no langid (permission issue, ...)").
            logger.debug("cannot read strings of %s: %s", _name(device), exc)
            return "", "", False
    return strings[0], strings[1], True


def _import_pyusb() -> tuple[Any, Any]:
    """pyusb's `usb.core` and `usb.util`, or (None, None) when pyusb is not installed."""
    try:
        import usb.core
        import usb.util
    except ImportError:
        return None, None
    return usb.core, usb.util


def _release(device: Any, release: Callable[[Any], object]) -> None:
    """Close the handle pyusb opened for the strings, so a periodic scan does not keep it."""
    try:
        release(device)
    except Exception as exc:  # releasing is best effort; the scan result is already complete
        logger.debug("cannot release %s: %s", _name(device), exc)


def _name(device: Any) -> str:
    try:
        return f"{int(device.idVendor):04x}:{int(device.idProduct):04x}"
    except (AttributeError, TypeError, ValueError):
        return repr(device)


def _enumeration_failed_reason(exc: BaseException) -> str:
    return (
        f"USB 设备枚举失败（{exc}）；请检查 /dev/bus/usb 是否存在、是否有权限 / "
        f"USB enumeration failed ({exc}): check that /dev/bus/usb exists and is readable"
    )
