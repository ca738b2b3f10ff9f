"""toxiproxy-python 0.1.1 against downtime: every API call the library exposes.

The library exposes: Toxiproxy.running/version/proxies/get_proxy/create/destroy/
destroy_all/populate/reset/update_api_consumer and Proxy.toxics/get_toxic/add_toxic/
destroy_toxic/enable/disable/down/destroy. It has no call for updating a toxic or a
proxy's addresses, nor for the server-side /populate; for those the tests use the
library's own low-level `APIConsumer` (same HTTP path the library uses), which also
maps 400/404/409 answers to its exception types.
"""

import json
import socket

import pytest
import requests

from toxiproxy import Proxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

import helpers
from helpers import assert_refused, connect, port_of, round_trip


def error_body(excinfo):
    """The JSON error document carried by a toxiproxy-python exception."""
    return json.loads(excinfo.value.args[0])


# Every toxic type with the attributes we send and the full attribute set the
# server must report back (every attribute of the type, defaults filled with 0).
TOXICS = [
    ("latency", {"latency": 100}, {"latency": 100, "jitter": 0}),
    ("latency", {"latency": 100, "jitter": 10}, {"latency": 100, "jitter": 10}),
    ("bandwidth", {"rate": 100}, {"rate": 100}),
    ("slow_close", {"delay": 100}, {"delay": 100}),
    ("timeout", {"timeout": 100}, {"timeout": 100}),
    ("reset_peer", {"timeout": 100}, {"timeout": 100}),
    ("slicer", {"average_size": 64}, {"average_size": 64, "size_variation": 0, "delay": 0}),
    (
        "slicer",
        {"average_size": 64, "size_variation": 8, "delay": 10},
        {"average_size": 64, "size_variation": 8, "delay": 10},
    ),
    ("limit_data", {"bytes": 100}, {"bytes": 100}),
    ("noop", {}, {}),
]

DEFAULT_ATTRIBUTES = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    "noop": {},
}


# --- server -----------------------------------------------------------------


def test_running(tp):
    assert tp.running() is True


def test_version(tp):
    body = tp.version()
    assert isinstance(body, bytes)
    assert json.loads(body) == {"version": "2.12.0"}
    assert body == b'{"version": "2.12.0"}\n'


def test_version_content_type(base_url, tp):
    r = requests.get(base_url + "/version", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].replace(" ", "").lower().startswith("application/json")


def test_proxies_empty(tp):
    assert tp.proxies() == {}
    assert APIConsumer.get("/proxies").json() == {}


# --- create / get / list ----------------------------------------------------


def test_create_returns_bound_listen(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_create")
    assert isinstance(proxy, Proxy)
    assert proxy.name == "py_create"
    assert proxy.upstream == echo.addr
    assert proxy.enabled is True
    # The library sends listen 127.0.0.1:0; the server reports the bound port.
    host, port = proxy.listen.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert round_trip(int(port)) < 5


def test_create_with_explicit_listen(tp, echo):
    port = helpers.free_port()
    proxy = tp.create(upstream=echo.addr, name="py_explicit", listen="127.0.0.1:%d" % port)
    assert proxy.listen == "127.0.0.1:%d" % port
    round_trip(port)


def test_create_response_shape(tp, echo):
    r = APIConsumer.post("/proxies", json={"name": "py_shape", "upstream": echo.addr, "listen": "127.0.0.1:0"})
    assert r.status_code == 201
    body = r.json()
    assert list(body.keys())[:4] == ["name", "listen", "upstream", "enabled"]
    assert body["toxics"] == []
    assert body["enabled"] is True


def test_create_disabled(tp, echo):
    port = helpers.free_port()
    listen = "127.0.0.1:%d" % port
    proxy = tp.create(upstream=echo.addr, name="py_disabled", listen=listen, enabled=False)
    assert proxy.enabled is False
    assert proxy.listen == listen
    assert_refused(port)
    assert tp.get_proxy("py_disabled").enabled is False
    proxy.enable()
    assert proxy.enabled is True
    assert tp.get_proxy("py_disabled").enabled is True
    round_trip(port)


def test_proxies_and_get_proxy(tp, echo):
    tp.create(upstream=echo.addr, name="py_a")
    tp.create(upstream="127.0.0.1:1", name="py_b", enabled=False)
    proxies = tp.proxies()
    assert sorted(proxies) == ["py_a", "py_b"]
    assert all(isinstance(p, Proxy) for p in proxies.values())
    assert proxies["py_a"].upstream == echo.addr
    assert proxies["py_a"].enabled is True
    assert proxies["py_b"].upstream == "127.0.0.1:1"
    assert proxies["py_b"].enabled is False
    got = tp.get_proxy("py_a")
    assert got.name == "py_a" and got.listen == proxies["py_a"].listen
    assert tp.get_proxy("py_missing") is None


def test_get_single_proxy_endpoint(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_single")
    body = APIConsumer.get("/proxies/py_single").json()
    assert body["name"] == "py_single"
    assert body["listen"] == proxy.listen
    assert body["upstream"] == echo.addr
    assert body["enabled"] is True
    assert body["toxics"] == []


def test_get_missing_proxy_is_not_found(tp):
    with pytest.raises(NotFound) as excinfo:
        APIConsumer.get("/proxies/py_nope")
    assert error_body(excinfo) == {"error": "proxy not found", "status": 404}


def test_create_existing_name_client_side(tp, echo):
    tp.create(upstream=echo.addr, name="py_dup")
    # The library checks the name list first.
    with pytest.raises(ProxyExists):
        tp.create(upstream=echo.addr, name="py_dup")


def test_create_existing_name_server_side(tp, echo):
    tp.create(upstream=echo.addr, name="py_dup2")
    with pytest.raises(ProxyExists) as excinfo:
        APIConsumer.post("/proxies", json={"name": "py_dup2", "upstream": echo.addr, "listen": "127.0.0.1:0"})
    assert error_body(excinfo) == {"error": "proxy already exists", "status": 409}


def test_create_missing_upstream(tp):
    with pytest.raises(InvalidToxic) as excinfo:
        tp.create(upstream="", name="py_no_upstream")
    assert error_body(excinfo) == {"error": "missing required field: upstream", "status": 400}
    assert tp.get_proxy("py_no_upstream") is None


def test_create_missing_name(tp, echo):
    with pytest.raises(InvalidToxic) as excinfo:
        tp.create(upstream=echo.addr, name="")
    assert error_body(excinfo) == {"error": "missing required field: name", "status": 400}


def test_create_bad_json(tp):
    with pytest.raises(InvalidToxic) as excinfo:
        APIConsumer.post("/proxies", data=b"{not json")
    body = error_body(excinfo)
    assert body["status"] == 400
    assert body["error"].startswith("bad request body")


def test_create_listen_in_use_is_500_and_leaves_nothing(tp, echo):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = APIConsumer.post("/proxies", json={"name": "py_busy", "upstream": echo.addr, "listen": "127.0.0.1:%d" % port})
        assert r.status_code == 500
        body = r.json()
        assert body["status"] == 500
        assert "address already in use" in body["error"]
        assert tp.get_proxy("py_busy") is None
    finally:
        s.close()
    # After the port is freed the same request succeeds.
    r = APIConsumer.post("/proxies", json={"name": "py_busy", "upstream": echo.addr, "listen": "127.0.0.1:%d" % port})
    assert r.status_code == 201


# --- destroy ------------------------------------------------------------------


def test_destroy(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_destroy")
    port = port_of(proxy.listen)
    round_trip(port)
    assert tp.destroy(proxy) is True
    assert tp.get_proxy("py_destroy") is None
    assert_refused(port)
    with pytest.raises(NotFound) as excinfo:
        proxy.destroy()
    assert error_body(excinfo) == {"error": "proxy not found", "status": 404}


def test_destroy_status_is_204(tp, echo):
    tp.create(upstream=echo.addr, name="py_204")
    r = APIConsumer.delete("/proxies/py_204")
    assert r.status_code == 204
    assert r.content == b""


def test_destroy_non_proxy_returns_false(tp):
    assert tp.destroy("not a proxy object") is False


def test_destroy_all(tp, echo):
    for i in range(3):
        tp.create(upstream=echo.addr, name="py_all_%d" % i)
    assert len(tp.proxies()) == 3
    tp.destroy_all()
    assert tp.proxies() == {}


# --- enable / disable ---------------------------------------------------------


def test_disable_and_enable(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_toggle")
    port = port_of(proxy.listen)
    proxy.disable()
    assert proxy.enabled is False
    assert tp.get_proxy("py_toggle").enabled is False
    assert_refused(port)
    proxy.enable()
    assert proxy.enabled is True
    assert tp.get_proxy("py_toggle").enabled is True
    # Re-enabling re-binds the same (rewritten) address.
    assert tp.get_proxy("py_toggle").listen == proxy.listen
    round_trip(port)


def test_down_context_manager(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_down")
    port = port_of(proxy.listen)
    with proxy.down() as p:
        assert p is proxy
        assert_refused(port)
        assert tp.get_proxy("py_down").enabled is False
    assert tp.get_proxy("py_down").enabled is True
    round_trip(port)


def test_disable_missing_proxy_is_not_found(tp):
    ghost = Proxy(name="py_ghost", upstream="127.0.0.1:1", enabled=True, listen="127.0.0.1:1")
    with pytest.raises(NotFound):
        ghost.disable()


def test_update_proxy_upstream(tp, echo, greeter):
    """No library call for this: the library's APIConsumer posts the partial update."""
    proxy = tp.create(upstream=echo.addr, name="py_update")
    proxy.add_toxic(type="noop", name="keep_me")
    r = APIConsumer.post("/proxies/py_update", json={"upstream": greeter.addr})
    assert r.status_code == 200
    body = r.json()
    assert body["upstream"] == greeter.addr
    assert body["listen"] == proxy.listen
    assert body["enabled"] is True
    assert [t["name"] for t in body["toxics"]] == ["keep_me"]
    s = connect(port_of(proxy.listen))
    try:
        data, outcome, _ = helpers.read_until_closed(s, timeout=5)
    finally:
        s.close()
    assert data == helpers.GreeterServer.GREETING
    assert outcome == "eof"


# --- populate -----------------------------------------------------------------


def test_populate_library(tp, echo, greeter):
    """The library's populate is client-side: create what is missing or changed."""
    p1, p2 = helpers.free_port(), helpers.free_port()
    spec = [
        {"name": "py_pop1", "upstream": echo.addr, "listen": "127.0.0.1:%d" % p1},
        {"name": "py_pop2", "upstream": echo.addr, "listen": "127.0.0.1:%d" % p2},
    ]
    created = tp.populate(spec)
    assert sorted(p.name for p in created) == ["py_pop1", "py_pop2"]
    round_trip(p1)
    round_trip(p2)
    # Same spec again: nothing to do (server reports listen exactly as requested).
    assert tp.populate(spec) == []
    # Changed upstream: recreated.
    spec[1]["upstream"] = greeter.addr
    recreated = tp.populate(spec)
    assert [p.name for p in recreated] == ["py_pop2"]
    assert tp.get_proxy("py_pop2").upstream == greeter.addr


def test_populate_endpoint(tp, echo):
    """Server-side /populate through the library's APIConsumer."""
    p1 = helpers.free_port()
    spec = [
        {"name": "py_srv_pop1", "upstream": echo.addr, "listen": "127.0.0.1:%d" % p1},
        {"name": "py_srv_pop2", "upstream": echo.addr, "listen": "127.0.0.1:0", "enabled": False},
    ]
    r = APIConsumer.post("/populate", json=spec)
    assert r.status_code == 201
    body = r.json()
    assert list(body.keys()) == ["proxies"]
    assert [p["name"] for p in body["proxies"]] == ["py_srv_pop1", "py_srv_pop2"]
    assert body["proxies"][0]["listen"] == "127.0.0.1:%d" % p1
    assert body["proxies"][0]["enabled"] is True
    assert body["proxies"][1]["enabled"] is False
    round_trip(p1)

    # Unchanged entries are kept untouched, toxics included.
    tp.get_proxy("py_srv_pop1").add_toxic(type="latency", attributes={"latency": 1})
    r = APIConsumer.post("/populate", json=spec[:1])
    assert r.status_code == 201
    again = r.json()["proxies"]
    assert [t["name"] for t in again[0]["toxics"]] == ["latency_downstream"]


def test_populate_missing_field_changes_nothing(tp, echo):
    spec = [
        {"name": "py_pop_ok", "upstream": echo.addr, "listen": "127.0.0.1:0"},
        {"upstream": echo.addr, "listen": "127.0.0.1:0"},
    ]
    with pytest.raises(InvalidToxic) as excinfo:
        APIConsumer.post("/populate", json=spec)
    body = error_body(excinfo)
    assert body == {"error": "missing required field: name at proxy 2", "status": 400, "proxies": None}
    assert tp.proxies() == {}


def test_populate_object_body_is_bad_request(tp):
    with pytest.raises(InvalidToxic) as excinfo:
        APIConsumer.post("/populate", json={"name": "x", "upstream": "127.0.0.1:1"})
    body = error_body(excinfo)
    assert body["status"] == 400
    assert body["error"].startswith("bad request body")
    assert "proxies" in body and body["proxies"] is None


# --- reset --------------------------------------------------------------------


def test_reset(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_reset")
    proxy.add_toxic(type="latency", attributes={"latency": 2000})
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 10})
    proxy.disable()
    assert tp.reset() is True
    after = tp.get_proxy("py_reset")
    assert after.enabled is True
    assert after.toxics() == {}
    assert round_trip(port_of(proxy.listen)) < 1.5


def test_reset_status_is_204(tp):
    r = APIConsumer.post("/reset")
    assert r.status_code == 204


# --- toxics: add / list / get / remove ---------------------------------------


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
@pytest.mark.parametrize("toxic_type,attributes,expected", TOXICS)
def test_add_toxic_each_type(tp, echo, stream, toxic_type, attributes, expected):
    proxy = tp.create(upstream=echo.addr, name="py_tox")
    proxy.add_toxic(type=toxic_type, stream=stream, attributes=attributes)
    toxics = proxy.toxics()
    name = "%s_%s" % (toxic_type, stream)
    assert list(toxics) == [name]
    toxic = toxics[name]
    assert toxic.type == toxic_type
    assert toxic.stream == stream
    assert toxic.toxicity == 1
    assert toxic.attributes == expected
    got = proxy.get_toxic(name)
    assert got is not None and got.attributes == expected


@pytest.mark.parametrize("toxic_type", sorted(DEFAULT_ATTRIBUTES))
def test_add_toxic_without_attributes_gets_defaults(tp, echo, toxic_type):
    proxy = tp.create(upstream=echo.addr, name="py_defaults")
    proxy.add_toxic(type=toxic_type, name="d")
    assert proxy.get_toxic("d").attributes == DEFAULT_ATTRIBUTES[toxic_type]


def test_add_toxic_response_shape(tp, echo):
    tp.create(upstream=echo.addr, name="py_tshape")
    r = APIConsumer.post("/proxies/py_tshape/toxics", json={"type": "latency", "attributes": {"latency": 5}})
    assert r.status_code == 200
    body = r.json()
    assert list(body.keys()) == ["attributes", "name", "type", "stream", "toxicity"]
    assert body == {
        "attributes": {"latency": 5, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }


def test_toxic_with_custom_name_and_toxicity(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_custom")
    proxy.add_toxic(type="latency", name="slow", toxicity=0.5, attributes={"latency": 10})
    toxic = proxy.get_toxic("slow")
    assert toxic.name == "slow"
    assert toxic.toxicity == 0.5
    assert proxy.get_toxic("latency_downstream") is None


def test_toxics_listed_upstream_first(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_order")
    proxy.add_toxic(type="latency", name="d1", stream="downstream")
    proxy.add_toxic(type="latency", name="u1", stream="upstream")
    proxy.add_toxic(type="noop", name="d2", stream="downstream")
    proxy.add_toxic(type="noop", name="u2", stream="upstream")
    names = [t["name"] for t in APIConsumer.get("/proxies/py_order/toxics").json()]
    assert names == ["u1", "u2", "d1", "d2"]
    listed = APIConsumer.get("/proxies").json()["py_order"]["toxics"]
    assert [t["name"] for t in listed] == names
    assert list(proxy.toxics()) == names


def test_get_toxic_missing(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_gt")
    assert proxy.get_toxic("nope") is None
    with pytest.raises(NotFound) as excinfo:
        APIConsumer.get("/proxies/py_gt/toxics/nope")
    assert error_body(excinfo) == {"error": "toxic not found", "status": 404}


def test_destroy_toxic(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_rm")
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1000})
    assert proxy.destroy_toxic("latency_downstream") is True
    assert list(proxy.toxics()) == ["bandwidth_upstream"]
    with pytest.raises(NotFound) as excinfo:
        proxy.destroy_toxic("latency_downstream")
    assert error_body(excinfo) == {"error": "toxic not found", "status": 404}
    r = APIConsumer.delete("/proxies/py_rm/toxics/bandwidth_upstream")
    assert r.status_code == 204
    assert proxy.toxics() == {}


def test_duplicate_toxic_name_conflicts_across_streams(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_tdup")
    proxy.add_toxic(type="latency", name="same", stream="downstream")
    with pytest.raises(ProxyExists) as excinfo:
        proxy.add_toxic(type="latency", name="same", stream="downstream")
    assert error_body(excinfo) == {"error": "toxic already exists", "status": 409}
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="bandwidth", name="same", stream="upstream")
    assert list(proxy.toxics()) == ["same"]


@pytest.mark.parametrize("bad_type", ["down", "nonsense", ""])
def test_invalid_toxic_type(tp, echo, bad_type):
    proxy = tp.create(upstream=echo.addr, name="py_badtype")
    with pytest.raises(InvalidToxic) as excinfo:
        proxy.add_toxic(type=bad_type, name="x")
    assert error_body(excinfo) == {"error": "invalid toxic type", "status": 400}
    assert proxy.toxics() == {}


def test_invalid_stream(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_badstream")
    with pytest.raises(InvalidToxic) as excinfo:
        proxy.add_toxic(type="latency", stream="sideways")
    assert error_body(excinfo) == {
        "error": "stream was invalid, can be either upstream or downstream",
        "status": 400,
    }


def test_stream_parsing_is_case_insensitive_and_echoed(tp, echo):
    tp.create(upstream=echo.addr, name="py_case")
    r = APIConsumer.post("/proxies/py_case/toxics", json={"type": "latency", "stream": "UPSTREAM"})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "latency_UPSTREAM"
    assert body["stream"] == "UPSTREAM"


def test_bad_attribute_type(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_badattr")
    with pytest.raises(InvalidToxic) as excinfo:
        proxy.add_toxic(type="latency", attributes={"latency": "slow"})
    assert error_body(excinfo)["status"] == 400
    assert proxy.toxics() == {}


def test_toxic_on_missing_proxy(tp):
    ghost = Proxy(name="py_ghost", upstream="127.0.0.1:1", enabled=True, listen="127.0.0.1:1")
    with pytest.raises(NotFound) as excinfo:
        ghost.add_toxic(type="latency")
    assert error_body(excinfo) == {"error": "proxy not found", "status": 404}
    with pytest.raises(NotFound):
        ghost.toxics()
    with pytest.raises(NotFound):
        ghost.destroy_toxic("latency_downstream")


def test_toxicity_not_validated(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_toxicity")
    proxy.add_toxic(type="noop", name="zero", toxicity=0)
    proxy.add_toxic(type="noop", name="big", toxicity=1.5)
    toxics = proxy.toxics()
    assert toxics["zero"].toxicity == 0
    assert toxics["big"].toxicity == 1.5


# --- toxics: update (through APIConsumer; the library has no update call) -----


def test_update_toxic_merges_attributes(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_tupd")
    proxy.add_toxic(type="latency", toxicity=0.5, attributes={"latency": 100, "jitter": 7})
    r = APIConsumer.post("/proxies/py_tupd/toxics/latency_downstream", json={"attributes": {"latency": 250}})
    assert r.status_code == 200
    assert r.json() == {
        "attributes": {"latency": 250, "jitter": 7},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.5,
    }
    r = APIConsumer.post("/proxies/py_tupd/toxics/latency_downstream", json={"toxicity": 1})
    assert r.status_code == 200
    assert r.json()["toxicity"] == 1
    assert r.json()["attributes"] == {"latency": 250, "jitter": 7}
    toxic = proxy.get_toxic("latency_downstream")
    assert toxic.attributes == {"latency": 250, "jitter": 7}
    assert toxic.toxicity == 1


def test_update_toxic_ignores_name_type_stream(tp, echo):
    proxy = tp.create(upstream=echo.addr, name="py_tupd2")
    proxy.add_toxic(type="bandwidth", attributes={"rate": 10})
    r = APIConsumer.post(
        "/proxies/py_tupd2/toxics/bandwidth_downstream",
        json={"name": "renamed", "type": "latency", "stream": "upstream", "attributes": {"rate": 20}},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "bandwidth_downstream"
    assert body["type"] == "bandwidth"
    assert body["stream"] == "downstream"
    assert body["attributes"] == {"rate": 20}


def test_update_missing_toxic(tp, echo):
    tp.create(upstream=echo.addr, name="py_tupd3")
    with pytest.raises(NotFound) as excinfo:
        APIConsumer.post("/proxies/py_tupd3/toxics/nope", json={"attributes": {}})
    assert error_body(excinfo) == {"error": "toxic not found", "status": 404}


# --- cross-cutting HTTP behaviour seen by the library's HTTP stack -------------


def test_unknown_path_is_404(base_url, tp):
    r = requests.get(base_url + "/nope", timeout=5)
    assert r.status_code == 404


def test_wrong_method_is_405(base_url, tp):
    r = requests.put(base_url + "/proxies", timeout=5)
    assert r.status_code == 405


def test_browser_user_agent_is_403(base_url, tp):
    r = requests.get(base_url + "/proxies", headers={"User-Agent": "Mozilla/5.0"}, timeout=5)
    assert r.status_code == 403
    assert r.text.strip() == "User agent not allowed"


def test_request_id_header(base_url, tp):
    r = requests.get(base_url + "/version", timeout=5)
    assert len(r.headers.get("X-Toxiproxy-Request-Id", "")) == 20
