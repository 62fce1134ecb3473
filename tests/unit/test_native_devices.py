"""Device detection (node.hostfw.devices): Cilium's isSelectedDevice rules on described links; the real links of a
node namespace are read in tests/e2e/test_host_firewall.py."""

from ciliumctl.node.hostfw.devices import IFF_LOOPBACK, IFF_UP, Link, select, why_not

UP = IFF_UP


def link(name, kind="", flags=UP, master=0, mac=True, addrs=("192.168.1.1",),
         routes=("192.168.1.0/24", "192.168.1.1/32"), index=2):
    return Link(index, name, kind, flags, master, mac, list(addrs), list(routes))


def test_a_physical_device_with_an_address_and_its_routes_is_selected():
    assert select([link("eth0"), link("lo", flags=UP | IFF_LOOPBACK, index=1)]) == ["eth0"]


def test_the_reasons_a_device_is_left_out():
    assert why_not(link("eth1", addrs=())) == "no addresses"
    assert why_not(link("eth1", flags=0)) == "down"
    assert why_not(link("eth1", master=3)) == "bridged or bonded to ifindex 3"
    assert why_not(link("wg0", mac=False)) == "L3 device (no link-layer address)"
    assert why_not(link("lxc1234")) == "excluded prefix 'lxc'"
    assert why_not(link("cilium_host")) == "excluded prefix 'cilium_'"
    assert why_not(link("docker0", kind="bridge")) == "excluded prefix 'docker'"
    assert why_not(link("br0", kind="bridge")) == "bridge-like device"
    assert why_not(link("veth1", kind="veth")) == "veth without default route"
    assert why_not(link("eth2", addrs=("169.254.1.1",), routes=("169.254.0.0/16",))) == "no global unicast routes"


def test_a_veth_with_the_default_route_is_selected_as_in_kind():
    assert why_not(link("eth0", kind="veth", routes=("0.0.0.0/0", "172.18.0.0/16"))) == ""
