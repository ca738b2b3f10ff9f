'use strict';
// toxiproxy-node-client 4.1.0 against downtime: every call the library exposes.
//
// Library surface: Toxiproxy(host).createProxy/populate/get/getAll/getVersion/reset,
// Proxy.update/remove/addToxic/getToxic/toJson, Toxic.update/remove/toJson, and the
// HttpClient behind getApi() (used for the one endpoint without a wrapper: listing a
// proxy's toxics). The client takes a base URL, so it runs against a free port.
// Errors surface as ToxiproxyError("Request failed with status code N").

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { Toxiproxy, Proxy, Toxic, ToxiproxyError } = require('toxiproxy-node-client');
const { startServer } = require('../lib/server');
const {
  echoServer,
  greeterServer,
  freePort,
  connect,
  connectError,
  roundTrip,
  portOf,
  GREETING,
} = require('../lib/net');

let server;
let toxiproxy;
let echo;
let greeter;

/** Asserts that promise rejects with the library's error for HTTP status `code`. */
async function rejectsWithStatus(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof ToxiproxyError, `expected ToxiproxyError, got ${err}`);
    assert.equal(err.message, `Request failed with status code ${code}`);
    return true;
  });
}

/** Raw request (for status codes / bodies the library hides). */
async function raw(method, path, body) {
  const init = { method, signal: AbortSignal.timeout(10000) };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(`${server.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, text, headers: res.headers };
}

async function removeAll() {
  const all = await toxiproxy.getAll();
  for (const p of Object.values(all)) await p.remove();
}

const TOXICS = [
  ['latency', { latency: 100 }, { latency: 100, jitter: 0 }],
  ['latency', { latency: 100, jitter: 10 }, { latency: 100, jitter: 10 }],
  ['bandwidth', { rate: 100 }, { rate: 100 }],
  ['slow_close', { delay: 100 }, { delay: 100 }],
  ['timeout', { timeout: 100 }, { timeout: 100 }],
  ['reset_peer', { timeout: 100 }, { timeout: 100 }],
  ['slicer', { average_size: 64 }, { average_size: 64, size_variation: 0, delay: 0 }],
  [
    'slicer',
    { average_size: 64, size_variation: 8, delay: 10 },
    { average_size: 64, size_variation: 8, delay: 10 },
  ],
  ['limit_data', { bytes: 100 }, { bytes: 100 }],
  ['noop', {}, {}],
];

const DEFAULT_ATTRIBUTES = {
  latency: { latency: 0, jitter: 0 },
  bandwidth: { rate: 0 },
  slow_close: { delay: 0 },
  timeout: { timeout: 0 },
  reset_peer: { timeout: 0 },
  slicer: { average_size: 0, size_variation: 0, delay: 0 },
  limit_data: { bytes: 0 },
  noop: {},
};

before(async () => {
  server = await startServer();
  toxiproxy = new Toxiproxy(server.url);
  echo = await echoServer();
  greeter = await greeterServer();
});

after(async () => {
  if (echo) await echo.close();
  if (greeter) await greeter.close();
  if (server) await server.stop();
});

beforeEach(async () => {
  await removeAll();
});

describe('server', () => {
  it('getVersion returns the 2.12.0 JSON document', async () => {
    const text = await toxiproxy.getVersion();
    assert.equal(text, '{"version": "2.12.0"}\n');
    assert.deepEqual(JSON.parse(text), { version: '2.12.0' });
  });

  it('getAll is empty on a fresh server', async () => {
    assert.deepEqual(await toxiproxy.getAll(), {});
  });

  it('reset answers 204 with an empty body (library resolves)', async () => {
    await toxiproxy.reset();
    const r = await raw('POST', '/reset');
    assert.equal(r.status, 204);
    assert.equal(r.text, '');
  });

  it('every matched route carries a 20-char request id', async () => {
    const r = await raw('GET', '/version');
    assert.equal((r.headers.get('x-toxiproxy-request-id') || '').length, 20);
  });
});

describe('proxies', () => {
  it('createProxy returns a Proxy with the bound listen address', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_create', listen: '127.0.0.1:0', upstream: echo.addr });
    assert.ok(proxy instanceof Proxy);
    assert.equal(proxy.name, 'node_create');
    assert.equal(proxy.upstream, echo.addr);
    assert.equal(proxy.enabled, true);
    assert.match(proxy.listen, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(portOf(proxy.listen), 0);
    assert.deepEqual(proxy.toJson(), {
      enabled: true,
      listen: proxy.listen,
      name: 'node_create',
      upstream: echo.addr,
    });
    assert.equal(proxy.getPath(), `${server.url}/proxies/node_create`);
    assert.ok((await roundTrip(portOf(proxy.listen))) < 5000);
  });

  it('createProxy with localhost:0 rewrites listen to 127.0.0.1', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_localhost', listen: 'localhost:0', upstream: echo.addr });
    assert.match(proxy.listen, /^127\.0\.0\.1:\d+$/);
    await roundTrip(portOf(proxy.listen));
  });

  it('createProxy disabled keeps listen as given and refuses connections', async () => {
    const port = await freePort();
    const proxy = await toxiproxy.createProxy({
      name: 'node_disabled',
      listen: `127.0.0.1:${port}`,
      upstream: echo.addr,
      enabled: false,
    });
    assert.equal(proxy.enabled, false);
    assert.equal(proxy.listen, `127.0.0.1:${port}`);
    assert.equal(await connectError(port), 'ECONNREFUSED');
    const enabled = await proxy.update({ enabled: true });
    assert.equal(enabled.enabled, true);
    await roundTrip(port);
  });

  it('createProxy response is 201 with toxics: []', async () => {
    const r = await raw('POST', '/proxies', { name: 'node_raw', listen: '127.0.0.1:0', upstream: echo.addr });
    assert.equal(r.status, 201);
    const body = JSON.parse(r.text);
    assert.deepEqual(Object.keys(body).filter((k) => k !== 'Logger'), ['name', 'listen', 'upstream', 'enabled', 'toxics']);
    assert.deepEqual(body.toxics, []);
  });

  it('createProxy with a taken name rejects with 409', async () => {
    await toxiproxy.createProxy({ name: 'node_dup', listen: '127.0.0.1:0', upstream: echo.addr });
    await rejectsWithStatus(
      toxiproxy.createProxy({ name: 'node_dup', listen: '127.0.0.1:0', upstream: echo.addr }),
      409,
    );
    const r = await raw('POST', '/proxies', { name: 'node_dup', listen: '127.0.0.1:0', upstream: echo.addr });
    assert.equal(r.status, 409);
    assert.deepEqual(JSON.parse(r.text), { error: 'proxy already exists', status: 409 });
  });

  it('createProxy without upstream / name rejects with 400', async () => {
    await rejectsWithStatus(toxiproxy.createProxy({ name: 'node_noup', listen: '127.0.0.1:0' }), 400);
    await rejectsWithStatus(toxiproxy.createProxy({ listen: '127.0.0.1:0', upstream: echo.addr }), 400);
    const r1 = await raw('POST', '/proxies', { name: 'node_noup', listen: '127.0.0.1:0' });
    assert.deepEqual(JSON.parse(r1.text), { error: 'missing required field: upstream', status: 400 });
    const r2 = await raw('POST', '/proxies', { upstream: echo.addr });
    assert.deepEqual(JSON.parse(r2.text), { error: 'missing required field: name', status: 400 });
    assert.deepEqual(await toxiproxy.getAll(), {});
  });

  it('createProxy on a busy port rejects with 500 and creates nothing', async () => {
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address();
    try {
      await rejectsWithStatus(
        toxiproxy.createProxy({ name: 'node_busy', listen: `127.0.0.1:${port}`, upstream: echo.addr }),
        500,
      );
      const r = await raw('POST', '/proxies', { name: 'node_busy', listen: `127.0.0.1:${port}`, upstream: echo.addr });
      assert.equal(r.status, 500);
      const body = JSON.parse(r.text);
      assert.equal(body.status, 500);
      assert.match(body.error, /address already in use/);
      await rejectsWithStatus(toxiproxy.get('node_busy'), 404);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    const proxy = await toxiproxy.createProxy({ name: 'node_busy', listen: `127.0.0.1:${port}`, upstream: echo.addr });
    assert.equal(proxy.listen, `127.0.0.1:${port}`);
  });

  it('get returns one proxy; unknown name rejects with 404', async () => {
    const created = await toxiproxy.createProxy({ name: 'node_get', listen: '127.0.0.1:0', upstream: echo.addr });
    const got = await toxiproxy.get('node_get');
    assert.ok(got instanceof Proxy);
    assert.deepEqual(got.toJson(), created.toJson());
    await rejectsWithStatus(toxiproxy.get('node_missing'), 404);
    const r = await raw('GET', '/proxies/node_missing');
    assert.equal(r.status, 404);
    assert.deepEqual(JSON.parse(r.text), { error: 'proxy not found', status: 404 });
  });

  it('getAll lists every proxy keyed by name', async () => {
    await toxiproxy.createProxy({ name: 'node_a', listen: '127.0.0.1:0', upstream: echo.addr });
    await toxiproxy.createProxy({ name: 'node_b', listen: '127.0.0.1:0', upstream: '127.0.0.1:1', enabled: false });
    const all = await toxiproxy.getAll();
    assert.deepEqual(Object.keys(all).sort(), ['node_a', 'node_b']);
    assert.ok(all.node_a instanceof Proxy);
    assert.equal(all.node_a.enabled, true);
    assert.equal(all.node_b.enabled, false);
    assert.equal(all.node_b.upstream, '127.0.0.1:1');
  });

  it('update disables and enables (connections refused while down)', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_toggle', listen: '127.0.0.1:0', upstream: echo.addr });
    const port = portOf(proxy.listen);
    const down = await proxy.update({ enabled: false });
    assert.ok(down instanceof Proxy);
    assert.equal(down.enabled, false);
    assert.equal(down.listen, proxy.listen);
    assert.equal(await connectError(port), 'ECONNREFUSED');
    assert.equal((await toxiproxy.get('node_toggle')).enabled, false);
    const up = await proxy.update({ enabled: true });
    assert.equal(up.enabled, true);
    assert.equal(up.listen, proxy.listen, 're-enable re-binds the same address');
    await roundTrip(port);
  });

  it('update with only upstream keeps listen, enabled and toxics', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_upd', listen: '127.0.0.1:0', upstream: echo.addr });
    await proxy.addToxic({ name: 'keep_me', type: 'noop' });
    const updated = await proxy.update({ upstream: greeter.addr });
    assert.equal(updated.upstream, greeter.addr);
    assert.equal(updated.listen, proxy.listen);
    assert.equal(updated.enabled, true);
    const toxics = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
    assert.deepEqual(toxics.map((t) => t.name), ['keep_me']);
    const c = await connect(portOf(proxy.listen));
    try {
      const { data, outcome } = await c.readUntilClosed(5000);
      assert.deepEqual(data, GREETING);
      assert.equal(outcome, 'eof');
    } finally {
      c.close();
    }
  });

  it('update with a new listen moves the listener', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_move', listen: '127.0.0.1:0', upstream: echo.addr });
    const oldPort = portOf(proxy.listen);
    const newPort = await freePort();
    const moved = await proxy.update({ listen: `127.0.0.1:${newPort}` });
    assert.equal(moved.listen, `127.0.0.1:${newPort}`);
    await roundTrip(newPort);
    assert.equal(await connectError(oldPort), 'ECONNREFUSED');
  });

  it('update of an unknown proxy rejects with 404', async () => {
    const ghost = new Proxy(toxiproxy, { name: 'node_ghost', listen: '127.0.0.1:1', upstream: '127.0.0.1:1', enabled: true });
    await rejectsWithStatus(ghost.update({ enabled: false }), 404);
  });

  it('update with a bad listen rejects with 500', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_badlisten', listen: '127.0.0.1:0', upstream: echo.addr });
    await rejectsWithStatus(proxy.update({ listen: 'tcp/bad' }), 500);
  });

  it('remove deletes the proxy (204) and stops listening; second remove is 404', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_rm', listen: '127.0.0.1:0', upstream: echo.addr });
    const port = portOf(proxy.listen);
    await roundTrip(port);
    assert.equal(await proxy.remove(), undefined);
    await rejectsWithStatus(toxiproxy.get('node_rm'), 404);
    assert.equal(await connectError(port), 'ECONNREFUSED');
    await rejectsWithStatus(proxy.remove(), 404);
    await toxiproxy.createProxy({ name: 'node_rm2', listen: '127.0.0.1:0', upstream: echo.addr });
    const r = await raw('DELETE', '/proxies/node_rm2');
    assert.equal(r.status, 204);
    assert.equal(r.text, '');
  });
});

describe('populate', () => {
  it('populate creates proxies and returns them keyed by name', async () => {
    const port = await freePort();
    const proxies = await toxiproxy.populate([
      { name: 'node_pop1', listen: `127.0.0.1:${port}`, upstream: echo.addr },
      { name: 'node_pop2', listen: '127.0.0.1:0', upstream: echo.addr, enabled: false },
    ]);
    assert.deepEqual(Object.keys(proxies).sort(), ['node_pop1', 'node_pop2']);
    assert.ok(proxies.node_pop1 instanceof Proxy);
    assert.equal(proxies.node_pop1.listen, `127.0.0.1:${port}`);
    assert.equal(proxies.node_pop1.enabled, true);
    assert.equal(proxies.node_pop2.enabled, false);
    await roundTrip(port);
  });

  it('populate answers 201 {"proxies": [...]} in input order', async () => {
    const r = await raw('POST', '/populate', [
      { name: 'node_ord_b', listen: '127.0.0.1:0', upstream: echo.addr },
      { name: 'node_ord_a', listen: '127.0.0.1:0', upstream: echo.addr },
    ]);
    assert.equal(r.status, 201);
    const body = JSON.parse(r.text);
    assert.deepEqual(Object.keys(body), ['proxies']);
    assert.deepEqual(body.proxies.map((p) => p.name), ['node_ord_b', 'node_ord_a']);
  });

  it('populate is idempotent: unchanged proxies keep toxics and connections', async () => {
    const port = await freePort();
    const spec = [{ name: 'node_idem', listen: `127.0.0.1:${port}`, upstream: echo.addr }];
    const first = await toxiproxy.populate(spec);
    await first.node_idem.addToxic({ name: 'lat', type: 'latency', attributes: { latency: 1 } });
    const c = await connect(port);
    try {
      await roundTrip(port, Buffer.from('a'), c);
      const again = await toxiproxy.populate(spec);
      assert.equal(again.node_idem.listen, `127.0.0.1:${port}`);
      const toxics = (await toxiproxy.getApi().get(`${server.url}/proxies/node_idem/toxics`)).data;
      assert.deepEqual(toxics.map((t) => t.name), ['lat']);
      assert.ok((await roundTrip(port, Buffer.from('b'), c)) < 5000, 'connection survived');
    } finally {
      c.close();
    }
  });

  it('populate with a changed upstream replaces the proxy (toxics dropped)', async () => {
    const port = await freePort();
    const first = await toxiproxy.populate([{ name: 'node_repl', listen: `127.0.0.1:${port}`, upstream: echo.addr }]);
    await first.node_repl.addToxic({ name: 'lat', type: 'latency', attributes: { latency: 1 } });
    const second = await toxiproxy.populate([{ name: 'node_repl', listen: `127.0.0.1:${port}`, upstream: greeter.addr }]);
    assert.equal(second.node_repl.upstream, greeter.addr);
    const toxics = (await toxiproxy.getApi().get(`${server.url}/proxies/node_repl/toxics`)).data;
    assert.deepEqual(toxics, []);
  });

  it('populate with a missing field rejects with 400 and changes nothing', async () => {
    await rejectsWithStatus(
      toxiproxy.populate([
        { name: 'node_ok', listen: '127.0.0.1:0', upstream: echo.addr },
        { name: 'node_bad', listen: '127.0.0.1:0' },
      ]),
      400,
    );
    assert.deepEqual(await toxiproxy.getAll(), {});
    const r = await raw('POST', '/populate', [
      { name: 'node_ok', listen: '127.0.0.1:0', upstream: echo.addr },
      { name: 'node_bad', listen: '127.0.0.1:0' },
    ]);
    assert.equal(r.status, 400);
    // Populate errors carry the proxies processed so far: none (null) when validation fails.
    assert.deepEqual(JSON.parse(r.text), {
      error: 'missing required field: upstream at proxy 2',
      status: 400,
      proxies: null,
    });
  });

  // downtime differs on purpose (docs/compatibility.md): a failed populate changes nothing.
  it('populate stops at a bind failure and rolls back the proxies already processed', async () => {
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address();
    try {
      const r = await raw('POST', '/populate', [
        { name: 'node_first', listen: '127.0.0.1:0', upstream: echo.addr },
        { name: 'node_second', listen: `127.0.0.1:${port}`, upstream: echo.addr },
        { name: 'node_third', listen: '127.0.0.1:0', upstream: echo.addr },
      ]);
      assert.equal(r.status, 500);
      const body = JSON.parse(r.text);
      assert.equal(body.status, 500);
      assert.match(body.error, /address already in use/);
      assert.deepEqual(body.proxies, []);
      assert.deepEqual(Object.keys(await toxiproxy.getAll()), []);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});

describe('reset', () => {
  it('reset re-enables proxies and removes every toxic', async () => {
    const proxy = await toxiproxy.createProxy({ name: 'node_reset', listen: '127.0.0.1:0', upstream: echo.addr });
    await proxy.addToxic({ type: 'latency', attributes: { latency: 2000 } });
    await proxy.addToxic({ type: 'timeout', stream: 'upstream', attributes: { timeout: 10 } });
    await proxy.update({ enabled: false });
    await toxiproxy.reset();
    const after = await toxiproxy.get('node_reset');
    assert.equal(after.enabled, true);
    const toxics = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
    assert.deepEqual(toxics, []);
    assert.ok((await roundTrip(portOf(proxy.listen))) < 1500);
  });
});

describe('toxics', () => {
  let proxy;
  beforeEach(async () => {
    proxy = await toxiproxy.createProxy({ name: 'node_tox', listen: '127.0.0.1:0', upstream: echo.addr });
  });

  for (const stream of ['downstream', 'upstream']) {
    for (const [type, attributes, expected] of TOXICS) {
      it(`addToxic ${type} ${JSON.stringify(attributes)} on ${stream}`, async () => {
        const toxic = await proxy.addToxic({ name: `${type}_${stream}`, type, stream, toxicity: 1, attributes });
        assert.ok(toxic instanceof Toxic);
        assert.deepEqual(toxic.toJson(), {
          attributes: expected,
          name: `${type}_${stream}`,
          stream,
          toxicity: 1,
          type,
        });
        const fetched = await proxy.getToxic(`${type}_${stream}`);
        assert.deepEqual(fetched.toJson(), toxic.toJson());
        const listed = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
        assert.deepEqual(listed, [
          { attributes: expected, name: `${type}_${stream}`, type, stream, toxicity: 1 },
        ]);
      });
    }
  }

  for (const [type, expected] of Object.entries(DEFAULT_ATTRIBUTES)) {
    it(`addToxic ${type} with only a type gets defaults`, async () => {
      const toxic = await proxy.addToxic({ type });
      assert.equal(toxic.name, `${type}_downstream`);
      assert.equal(toxic.stream, 'downstream');
      assert.equal(toxic.toxicity, 1);
      assert.deepEqual(toxic.attributes, expected);
    });
  }

  it('toxic JSON field order is attributes, name, type, stream, toxicity', async () => {
    const r = await raw('POST', '/proxies/node_tox/toxics', { type: 'latency', attributes: { latency: 5 } });
    assert.equal(r.status, 200);
    assert.equal(
      r.text,
      '{"attributes":{"latency":5,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}',
    );
  });

  it('stream is parsed case-insensitively and echoed verbatim', async () => {
    const toxic = await proxy.addToxic({ type: 'latency', stream: 'UPSTREAM' });
    assert.equal(toxic.name, 'latency_UPSTREAM');
    assert.equal(toxic.stream, 'UPSTREAM');
  });

  it('toxicity is stored as given (not validated)', async () => {
    assert.equal((await proxy.addToxic({ name: 'half', type: 'noop', toxicity: 0.5 })).toxicity, 0.5);
    assert.equal((await proxy.addToxic({ name: 'zero', type: 'noop', toxicity: 0 })).toxicity, 0);
    assert.equal((await proxy.addToxic({ name: 'big', type: 'noop', toxicity: 1.5 })).toxicity, 1.5);
  });

  it('toxics are listed upstream first, each direction in insertion order', async () => {
    await proxy.addToxic({ name: 'd1', type: 'latency', stream: 'downstream' });
    await proxy.addToxic({ name: 'u1', type: 'latency', stream: 'upstream' });
    await proxy.addToxic({ name: 'd2', type: 'noop', stream: 'downstream' });
    await proxy.addToxic({ name: 'u2', type: 'noop', stream: 'upstream' });
    const listed = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
    assert.deepEqual(listed.map((t) => t.name), ['u1', 'u2', 'd1', 'd2']);
    const all = (await toxiproxy.getApi().get(`${server.url}/proxies`)).data;
    assert.deepEqual(all.node_tox.toxics.map((t) => t.name), ['u1', 'u2', 'd1', 'd2']);
  });

  it('duplicate toxic names reject with 409, across directions too', async () => {
    await proxy.addToxic({ name: 'same', type: 'latency', stream: 'downstream' });
    await rejectsWithStatus(proxy.addToxic({ name: 'same', type: 'latency', stream: 'downstream' }), 409);
    await rejectsWithStatus(proxy.addToxic({ name: 'same', type: 'bandwidth', stream: 'upstream' }), 409);
    const r = await raw('POST', '/proxies/node_tox/toxics', { name: 'same', type: 'noop' });
    assert.deepEqual(JSON.parse(r.text), { error: 'toxic already exists', status: 409 });
  });

  it('type "down" (in the library\'s type list) and unknown types reject with 400', async () => {
    await rejectsWithStatus(proxy.addToxic({ name: 'x', type: 'down', attributes: {} }), 400);
    await rejectsWithStatus(proxy.addToxic({ name: 'x', type: 'nonsense' }), 400);
    const r = await raw('POST', '/proxies/node_tox/toxics', { name: 'x', type: 'down' });
    assert.deepEqual(JSON.parse(r.text), { error: 'invalid toxic type', status: 400 });
    const listed = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
    assert.deepEqual(listed, []);
  });

  it('a bad stream rejects with 400', async () => {
    await rejectsWithStatus(proxy.addToxic({ type: 'latency', stream: 'sideways' }), 400);
    const r = await raw('POST', '/proxies/node_tox/toxics', { type: 'latency', stream: 'sideways' });
    assert.deepEqual(JSON.parse(r.text), {
      error: 'stream was invalid, can be either upstream or downstream',
      status: 400,
    });
  });

  it('a wrongly typed attribute rejects with 400', async () => {
    await rejectsWithStatus(proxy.addToxic({ type: 'latency', attributes: { latency: 'slow' } }), 400);
  });

  it('getToxic of an unknown toxic rejects with 404', async () => {
    await rejectsWithStatus(proxy.getToxic('nope'), 404);
    const r = await raw('GET', '/proxies/node_tox/toxics/nope');
    assert.deepEqual(JSON.parse(r.text), { error: 'toxic not found', status: 404 });
  });

  it('toxics of an unknown proxy reject with 404', async () => {
    const ghost = new Proxy(toxiproxy, { name: 'node_ghost', listen: '127.0.0.1:1', upstream: '127.0.0.1:1', enabled: true });
    await rejectsWithStatus(ghost.addToxic({ type: 'latency' }), 404);
    await rejectsWithStatus(ghost.getToxic('latency_downstream'), 404);
    await rejectsWithStatus(toxiproxy.getApi().get(`${ghost.getPath()}/toxics`), 404);
  });

  it('Toxic.update merges attributes and keeps toxicity', async () => {
    const toxic = await proxy.addToxic({
      name: 'lat',
      type: 'latency',
      stream: 'downstream',
      toxicity: 0.5,
      attributes: { latency: 100, jitter: 7 },
    });
    const updated = await toxic.update({ attributes: { latency: 250 } });
    assert.ok(updated instanceof Toxic);
    assert.deepEqual(updated.toJson(), {
      attributes: { latency: 250, jitter: 7 },
      name: 'lat',
      stream: 'downstream',
      toxicity: 0.5,
      type: 'latency',
    });
    const again = await updated.update({ toxicity: 1 });
    assert.equal(again.toxicity, 1);
    assert.deepEqual(again.attributes, { latency: 250, jitter: 7 });
    assert.deepEqual((await proxy.getToxic('lat')).toJson(), again.toJson());
  });

  it('Toxic.update with the full toJson body ignores name/type/stream changes', async () => {
    const toxic = await proxy.addToxic({ name: 'bw', type: 'bandwidth', attributes: { rate: 10 } });
    const body = { ...toxic.toJson(), name: 'renamed', type: 'latency', stream: 'upstream', attributes: { rate: 20 } };
    const updated = await toxic.update(body);
    assert.deepEqual(updated.toJson(), {
      attributes: { rate: 20 },
      name: 'bw',
      stream: 'downstream',
      toxicity: 1,
      type: 'bandwidth',
    });
  });

  for (const [type, attributes] of TOXICS.map(([t, a]) => [t, a])) {
    it(`Toxic.update works for ${type}`, async () => {
      const toxic = await proxy.addToxic({ name: 'u', type, attributes });
      const bumped = Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, v + 1]));
      const updated = await toxic.update({ attributes: bumped, toxicity: 0.25 });
      assert.equal(updated.toxicity, 0.25);
      for (const [k, v] of Object.entries(bumped)) assert.equal(updated.attributes[k], v);
    });
  }

  it('Toxic.update of a removed toxic rejects with 404', async () => {
    const toxic = await proxy.addToxic({ name: 'gone', type: 'noop' });
    await toxic.remove();
    await rejectsWithStatus(toxic.update({ attributes: {} }), 404);
  });

  it('Toxic.remove deletes (204); second remove rejects with 404', async () => {
    const a = await proxy.addToxic({ name: 'a', type: 'latency' });
    await proxy.addToxic({ name: 'b', type: 'slicer', stream: 'upstream' });
    await a.remove();
    const listed = (await toxiproxy.getApi().get(`${proxy.getPath()}/toxics`)).data;
    assert.deepEqual(listed.map((t) => t.name), ['b']);
    await rejectsWithStatus(a.remove(), 404);
    const r = await raw('DELETE', '/proxies/node_tox/toxics/b');
    assert.equal(r.status, 204);
  });
});

describe('HTTP details the library relies on', () => {
  it('unknown path is 404, wrong method is 405', async () => {
    await rejectsWithStatus(toxiproxy.getApi().get(`${server.url}/nope`), 404);
    assert.equal((await raw('PUT', '/proxies')).status, 405);
  });

  it('browser user agents are refused with 403', async () => {
    const res = await fetch(`${server.url}/proxies`, {
      headers: { 'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64)' },
      signal: AbortSignal.timeout(10000),
    });
    assert.equal(res.status, 403);
    assert.equal((await res.text()).trim(), 'User agent not allowed');
  });

  it('PATCH is accepted for proxy and toxic updates', async () => {
    await toxiproxy.createProxy({ name: 'node_patch', listen: '127.0.0.1:0', upstream: echo.addr });
    const r1 = await raw('PATCH', '/proxies/node_patch', { enabled: false });
    assert.equal(r1.status, 200);
    assert.equal(JSON.parse(r1.text).enabled, false);
    await raw('POST', '/proxies/node_patch/toxics', { type: 'latency' });
    const r2 = await raw('PATCH', '/proxies/node_patch/toxics/latency_downstream', { attributes: { latency: 9 } });
    assert.equal(r2.status, 200);
    assert.equal(JSON.parse(r2.text).attributes.latency, 9);
  });
});
