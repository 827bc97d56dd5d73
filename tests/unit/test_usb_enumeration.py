"""USB enumeration against fake devices shaped like pyusb's, and once against this machine."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import usb.core

from eport.daemon.usb import (
    KNOWN_EPORT_KEYS,
    NO_LIBUSB_REASON,
    NO_PYUSB_REASON,
    UsbDeviceInfo,
    UsbDeviceKind,
    UsbScan,
    known_key,
    scan_usb,
)

CCID = 0x0B
HID = 0x03


@dataclass
class FakeInterface:
    bInterfaceClass: int


@dataclass
class FakeConfiguration:
    classes: tuple[int, ...]

    def interfaces(self) -> tuple[FakeInterface, ...]:
        return tuple(FakeInterface(c) for c in self.classes)


@dataclass
class FakeDevice:
    """The attributes scan_usb reads from a pyusb `usb.core.Device`."""

    idVendor: int
    idProduct: int
    bus: int = 1
    address: int = 2
    bDeviceClass: int = 0  # "see the interfaces", as most readers declare
    iManufacturer: int = 1
    iProduct: int = 2
    interface_classes: tuple[int, ...] = ()
    strings: dict[int, str] = field(default_factory=dict)
    config_error: Exception | None = None
    string_error: Exception | None = None

    def configurations(self) -> tuple[FakeConfiguration, ...]:
        if self.config_error is not None:
            raise self.config_error
        return (FakeConfiguration(self.interface_classes),)


class FakeUsb:
    """A fake `find` and `get_string`, recording what the scan asked for."""

    def __init__(self, *devices: FakeDevice, find_error: Exception | None = None) -> None:
        self.devices = devices
        self.find_error = find_error
        self.find_kwargs: dict[str, Any] = {}
        self.strings_read: list[tuple[int, int]] = []  # (vendor id, string index)

    def find(self, **kwargs: Any) -> Iterable[FakeDevice]:
        self.find_kwargs = kwargs
        if self.find_error is not None:
            raise self.find_error
        return iter(self.devices)

    def get_string(self, device: FakeDevice, index: int) -> str | None:
        self.strings_read.append((device.idVendor, index))
        if device.string_error is not None:
            raise device.string_error
        return device.strings.get(index)

    def scan(self) -> UsbScan:
        return scan_usb(find=self.find, get_string=self.get_string)


def reader(**overrides: Any) -> FakeDevice:
    values: dict[str, Any] = {
        "idVendor": 0x04E6, "idProduct": 0x5116, "interface_classes": (CCID,),
        "strings": {1: "SCM Microsystems Inc.", 2: "SCR3310 USB Smart Card Reader"},
    }
    values.update(overrides)
    return FakeDevice(**values)


def mouse() -> FakeDevice:
    return FakeDevice(0x046D, 0xC077, bus=1, address=5, interface_classes=(HID,),
                      strings={1: "Logitech", 2: "USB Optical Mouse"})


def test_a_ccid_reader_is_listed_with_its_strings() -> None:
    scan = FakeUsb(reader(bus=3, address=7)).scan()

    assert scan.available and scan.unavailable_reason == ""
    assert scan.devices == (
        UsbDeviceInfo(vendor_id=0x04E6, product_id=0x5116, bus=3, address=7,
                      manufacturer="SCM Microsystems Inc.",
                      product="SCR3310 USB Smart Card Reader",
                      kind=UsbDeviceKind.CCID_READER, accessible=True),
    )


def test_a_reader_whose_configuration_cannot_be_read_is_found_by_its_device_class() -> None:
    broken = reader(bDeviceClass=CCID, interface_classes=(),
                    config_error=usb.core.USBError("Pipe error", errno=errno.EPIPE))

    scan = FakeUsb(broken).scan()

    assert [d.kind for d in scan.devices] == [UsbDeviceKind.CCID_READER]


def test_a_known_eport_key_is_listed_as_a_key_even_though_it_is_ccid() -> None:
    watchdata_key = FakeDevice(0x163C, 0x0407, interface_classes=(CCID,),
                               strings={1: "Watchdata", 2: "USB Key"})

    scan = FakeUsb(watchdata_key).scan()

    assert len(scan.devices) == 1
    key = scan.devices[0]
    assert (key.vendor_id, key.product_id, key.kind) == (0x163C, 0x0407, UsbDeviceKind.EPORT_KEY)
    assert (key.manufacturer, key.product, key.accessible) == ("Watchdata", "USB Key", True)


def test_an_unknown_model_of_a_key_maker_matches_on_the_vendor_alone() -> None:
    # A non-CCID (vendor-class) key of a known maker: only the vendor id says what it is.
    feitian_hid_key = FakeDevice(0x096E, 0x0FFF, interface_classes=(0xFF,))
    # A CCID reader of the same maker stays a reader.
    feitian_reader = FakeDevice(0x096E, 0x0619, address=3, interface_classes=(CCID,))

    scan = FakeUsb(feitian_hid_key, feitian_reader).scan()

    assert [(d.product_id, d.kind) for d in scan.devices] == [
        (0x0FFF, UsbDeviceKind.EPORT_KEY), (0x0619, UsbDeviceKind.CCID_READER)]


def test_an_unrelated_device_is_excluded_and_never_opened() -> None:
    fake = FakeUsb(mouse(), reader(address=9))

    scan = fake.scan()

    assert [d.vendor_id for d in scan.devices] == [0x04E6]
    assert all(vendor != 0x046D for vendor, _ in fake.strings_read)  # the mouse was not opened


@pytest.mark.parametrize("error", [
    usb.core.USBError("Access denied (insufficient permissions)", errno=errno.EACCES),
    # pyusb reads the LANGID table first and turns EACCES there into this ValueError.
    ValueError("The device has no langid (permission issue, no string descriptors supported "
               "or device error)"),
], ids=["usb-error-eacces", "pyusb-langid-valueerror"])
def test_a_device_we_may_not_open_is_listed_as_inaccessible(error: Exception) -> None:
    locked = reader(string_error=error)

    scan = FakeUsb(locked).scan()

    assert scan.available
    (device,) = scan.devices
    assert device.kind is UsbDeviceKind.CCID_READER
    assert (device.accessible, device.manufacturer, device.product) == (False, "", "")


def test_other_string_errors_leave_the_device_accessible() -> None:
    flaky = reader(string_error=usb.core.USBError("Operation timed out", errno=errno.ETIMEDOUT))

    (device,) = FakeUsb(flaky).scan().devices

    assert (device.accessible, device.manufacturer, device.product) == (True, "", "")


def test_a_device_without_string_descriptors_is_not_opened() -> None:
    fake = FakeUsb(reader(iManufacturer=0, iProduct=0))

    (device,) = fake.scan().devices

    assert fake.strings_read == []
    assert (device.manufacturer, device.product, device.accessible) == ("", "", True)


def test_with_pyusbs_own_string_reader_the_opened_handles_are_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import usb.util

    fake = FakeUsb(reader(), mouse())
    released: list[int] = []
    monkeypatch.setattr(usb.util, "get_string", fake.get_string)
    monkeypatch.setattr(usb.util, "dispose_resources", lambda d: released.append(d.idVendor))

    scan = scan_usb(find=fake.find)  # get_string and the release default to pyusb's

    assert [d.product for d in scan.devices] == ["SCR3310 USB Smart Card Reader"]
    assert released == [0x04E6]  # the reader's handle; the mouse was never opened


def test_devices_come_sorted_by_bus_and_address() -> None:
    scan = FakeUsb(reader(bus=2, address=1), reader(bus=1, address=9),
                   reader(bus=1, address=3)).scan()

    assert [(d.bus, d.address) for d in scan.devices] == [(1, 3), (1, 9), (2, 1)]


def test_the_backend_is_handed_to_find() -> None:
    backend = object()
    fake = FakeUsb()

    scan_usb(backend, find=fake.find, get_string=fake.get_string)

    assert fake.find_kwargs == {"find_all": True, "backend": backend}


def test_missing_libusb_makes_the_scan_unavailable_with_a_remedy() -> None:
    fake = FakeUsb(find_error=usb.core.NoBackendError("No backend available"))

    scan = fake.scan()

    assert scan == UsbScan(False, NO_LIBUSB_REASON, ())
    assert "libusb-1.0-0" in scan.unavailable_reason  # the Debian package to install
    assert "找不到 libusb" in scan.unavailable_reason


def test_a_failing_enumeration_makes_the_scan_unavailable_instead_of_raising() -> None:
    fake = FakeUsb(find_error=usb.core.USBError("Other error", errno=errno.EIO))

    scan = fake.scan()

    assert not scan.available and scan.devices == ()
    assert "Other error" in scan.unavailable_reason


def test_missing_pyusb_makes_the_scan_unavailable_with_a_remedy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import usb.core` raise ImportError, as on a machine without it.
    for name in ("usb", "usb.core", "usb.util"):
        monkeypatch.setitem(sys.modules, name, None)

    scan = scan_usb()

    assert scan == UsbScan(False, NO_PYUSB_REASON, ())
    assert "pip install pyusb" in scan.unavailable_reason
    assert "pyusb 未安装" in scan.unavailable_reason


def test_the_known_key_table_is_well_formed() -> None:
    ids = [(k.vendor_id, k.product_id) for k in KNOWN_EPORT_KEYS]
    assert len(ids) == len(set(ids)), "duplicate entries"
    for key in KNOWN_EPORT_KEYS:
        assert 0 < key.vendor_id <= 0xFFFF
        assert key.product_id is None or 0 <= key.product_id <= 0xFFFF
        assert key.maker and key.source
    # An exact model beats the vendor-wide entry of the same maker.
    exact = known_key(0x163C, 0x0407)
    assert exact is not None and exact.product_id == 0x0407
    vendor_wide = known_key(0x163C, 0x1234)
    assert vendor_wide is not None and vendor_wide.product_id is None
    assert known_key(0x046D, 0xC077) is None


def test_a_real_scan_on_this_machine_returns_a_scan() -> None:
    # This machine may have no USB bus at all: available with no devices, or unavailable with a
    # reason, are both fine; raising is not.
    scan = scan_usb()

    assert isinstance(scan, UsbScan)
    assert all(isinstance(d, UsbDeviceInfo) for d in scan.devices)
    if not scan.available:
        assert scan.unavailable_reason.strip()
        assert scan.devices == ()
