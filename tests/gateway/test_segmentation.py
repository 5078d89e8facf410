"""The gateway's two faces: the device socket binds where --bind says, the uplink leaves from --uplink-source."""

from pathlib import Path

import zmq

from gateway.driver import GatewayConfig, _uplink_endpoint


def cfg(cloud: str = "tcp://10.9.8.7:7700", **kw) -> GatewayConfig:
    return GatewayConfig("gw-1", "site-1", Path("/nonexistent"), cloud, b"k" * 40, **kw)


def test_the_uplink_endpoint_names_its_source_interface_only_when_given() -> None:
    assert _uplink_endpoint(cfg()) == ["tcp://10.9.8.7:7700"]
    assert _uplink_endpoint(cfg(uplink_source="192.0.2.5")) == ["tcp://192.0.2.5:0;10.9.8.7:7700"]


def test_n_coordinators_are_a_comma_separated_list_each_leaving_from_the_source() -> None:
    two = "tcp://10.9.8.7:7700, tcp://10.9.8.8:7700"
    assert _uplink_endpoint(cfg(cloud=two)) == ["tcp://10.9.8.7:7700", "tcp://10.9.8.8:7700"]
    assert _uplink_endpoint(cfg(cloud=two, uplink_source="192.0.2.5")) == [
        "tcp://192.0.2.5:0;10.9.8.7:7700", "tcp://192.0.2.5:0;10.9.8.8:7700"]


def test_a_source_bound_uplink_really_connects_from_that_address() -> None:
    ctx = zmq.Context()
    try:
        server = ctx.socket(zmq.ROUTER)
        server.linger = 0
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client = ctx.socket(zmq.DEALER)
        client.linger = 0
        client.connect(_uplink_endpoint(cfg(uplink_source="127.0.0.1"))[0].replace("10.9.8.7:7700", f"127.0.0.1:{port}"))
        client.send(b"hello")
        assert server.poll(5000)
        frames = server.recv_multipart(copy=False)
        assert frames[1].bytes == b"hello" and frames[1].get("Peer-Address") == "127.0.0.1"
    finally:
        ctx.destroy(linger=0)
