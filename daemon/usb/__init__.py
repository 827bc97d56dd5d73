"""USB enumeration of smart-card readers and E-port keys (the only user of pyusb)."""

from eport.daemon.usb.enumeration import (
    KNOWN_EPORT_KEYS,
    NO_LIBUSB_REASON,
    NO_PYUSB_REASON,
    KnownKey,
    UsbDeviceInfo,
    UsbDeviceKind,
    UsbScan,
    known_key,
    scan_usb,
)

__all__ = [
    "KNOWN_EPORT_KEYS",
    "NO_LIBUSB_REASON",
    "NO_PYUSB_REASON",
    "KnownKey",
    "UsbDeviceInfo",
    "UsbDeviceKind",
    "UsbScan",
    "known_key",
    "scan_usb",
]
