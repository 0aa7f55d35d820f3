"""Each test's own share of the loopback network, so that any two tests of the suites that run beside each
other (control, boot, integration, webd, webctl) can run at once.

A test has a slot number, LBD_TEST_SLOT in its environment (each suite's meson.build gives each test its
own; tests/meson.build refuses a slot given twice; 0 when unset, as in a run by hand). Slot s owns:
  - for s below SUBNET_SLOTS (the control tests and the boot journey), the /24 subnets 127.0.(1 + 4s).0 to
    127.0.(4 + 4s).0, inside the VPC 127.0.0.0/16 that every control test's moto has: its instances, and
    so the relays or machines that serve on their addresses, are its own;
  - PORTS TCP ports: from 20000 + PORTS * s for s below SUBNET_SLOTS (20000 to 31999), from
    10000 + PORTS * (s - SUBNET_SLOTS) above (10000 to 19999), all below the kernel's ephemeral range
    (32768 and up by default), so that no outgoing connection of another process takes one as its source
    port between the moment a port is chosen and the moment its server binds it.
Ports are handed out in order and never twice in one process; each is checked free first by binding it on
the wildcard address, which fails while any address of this machine has it.
"""

import os
import socket

SLOT_VAR = "LBD_TEST_SLOT"
SUBNET_SLOTS = 48  # slots 0 to 47: subnets and ports 20000 to 31999
SLOTS = 88  # slots 48 to 87: ports 10000 to 19999, no subnets
SUBNETS = 4  # subnets per slot: one per availability zone a test may use
PORTS = 250  # ports per slot


def slot():
    raw = os.environ.get(SLOT_VAR, "0")
    try:
        value = int(raw)
    except ValueError:
        raise AssertionError(f"{SLOT_VAR}={raw!r} is not a number") from None
    if not 0 <= value < SLOTS:
        raise AssertionError(f"{SLOT_VAR}={value} is outside 0..{SLOTS - 1}")
    return value


def subnet_prefix(index=0):
    """"127.0.N." of the slot's subnet <index> (0 to SUBNETS - 1)."""
    if not 0 <= index < SUBNETS:
        raise AssertionError(f"a test has {SUBNETS} subnets, not {index + 1}")
    if slot() >= SUBNET_SLOTS:
        raise AssertionError(f"slot {slot()} has no subnets: only slots below {SUBNET_SLOTS} have")
    return f"127.0.{1 + SUBNETS * slot() + index}."


def subnet(index=0):
    """The CIDR of the slot's subnet <index>."""
    return subnet_prefix(index) + "0/24"


def first_port(s=None):
    """The first port of slot <s> (default: this test's)."""
    s = slot() if s is None else s
    if s < SUBNET_SLOTS:
        return 20000 + PORTS * s
    return 10000 + PORTS * (s - SUBNET_SLOTS)


_next = {"port": None}


def _is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_ports(n=1):
    """The first port of a block of <n> consecutive free ports of this slot's range, not handed out before
    in this process."""
    first = first_port()
    end = first + PORTS
    port = _next["port"] if _next["port"] is not None else first
    while port + n <= end:
        busy = next((p for p in range(port, port + n) if not _is_free(p)), None)
        if busy is None:
            _next["port"] = port + n
            return port
        port = busy + 1
    raise AssertionError(f"slot {slot()}: no {n} free ports left in {first}..{end - 1}")


def free_port():
    return free_ports(1)
