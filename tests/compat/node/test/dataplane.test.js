'use strict';
// Real bytes through proxies configured with toxiproxy-node-client 4.1.0.
// Timing bounds are loose on purpose: lower bounds claim a clear fraction of the
// configured delay, upper bounds are seconds.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { Toxiproxy } = require('toxiproxy-node-client');
const { startServer } = require('../lib/server');
const {
  echoServer,
  greeterServer,
  sinkServer,
  freePort,
  connect,
  connectError,
  roundTrip,
  waitUntil,
  portOf,
  GREETING,
} = require('../lib/net');

let server;
let toxiproxy;
let echo;
let greeter;

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
  const all = await toxiproxy.getAll();
  for (const p of Object.values(all)) await p.remove();
});

async function makeProxy(upstreamAddr, name = 'node_data') {
  const proxy = await toxiproxy.createProxy({ name, listen: '127.0.0.1:0', upstream: upstreamAddr });
  return { proxy, port: portOf(proxy.listen) };
}

describe('data path', () => {
  it('passes 256 KiB unchanged', async () => {
    const { port } = await makeProxy(echo.addr);
    const payload = Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => i % 251));
    const c = await connect(port);
    try {
      c.write(payload);
      assert.ok((await c.readExactly(payload.length)).equals(payload));
    } finally {
      c.close();
    }
  });

  it('closes the client when the upstream is unreachable', async () => {
    const { port } = await makeProxy(`127.0.0.1:${await freePort()}`, 'node_unreach');
    const c = await connect(port);
    try {
      const { data, outcome } = await c.readUntilClosed(5000);
      assert.equal(data.length, 0);
      assert.ok(['eof', 'reset'].includes(outcome), outcome);
    } finally {
      c.close();
    }
  });

  it('disabled proxy refuses connections and drops open ones', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    const c = await connect(port);
    try {
      await roundTrip(port, Buffer.from('x'), c);
      await proxy.update({ enabled: false });
      const { outcome } = await c.readUntilClosed(5000);
      assert.ok(['eof', 'reset'].includes(outcome), outcome);
    } finally {
      c.close();
    }
    assert.equal(await connectError(port), 'ECONNREFUSED');
    await proxy.update({ enabled: true });
    await roundTrip(port);
  });

  it('removing a proxy drops open connections', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    const c = await connect(port);
    try {
      await roundTrip(port, Buffer.from('x'), c);
      await proxy.remove();
      const { outcome } = await c.readUntilClosed(5000);
      assert.ok(['eof', 'reset'].includes(outcome), outcome);
    } finally {
      c.close();
    }
    assert.equal(await connectError(port), 'ECONNREFUSED');
  });
});

describe('toxics on the wire', () => {
  it('latency downstream delays, removal restores', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    assert.ok((await roundTrip(port)) < 400);
    const toxic = await proxy.addToxic({ type: 'latency', attributes: { latency: 600, jitter: 0 } });
    const slow = await roundTrip(port);
    assert.ok(slow >= 500 && slow < 5000, `round trip ${slow} ms`);
    await toxic.remove();
    assert.ok((await roundTrip(port)) < 400);
  });

  it('latency upstream delays', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'latency', stream: 'upstream', attributes: { latency: 600 } });
    const slow = await roundTrip(port);
    assert.ok(slow >= 500 && slow < 5000, `round trip ${slow} ms`);
  });

  it('latency added and updated on an open connection applies at once', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    const c = await connect(port);
    try {
      assert.ok((await roundTrip(port, Buffer.from('a'), c)) < 400);
      const toxic = await proxy.addToxic({ type: 'latency', attributes: { latency: 100 } });
      const t1 = await roundTrip(port, Buffer.from('b'), c);
      assert.ok(t1 >= 80 && t1 < 5000, `round trip ${t1} ms`);
      await toxic.update({ attributes: { latency: 700 } });
      const t2 = await roundTrip(port, Buffer.from('c'), c);
      assert.ok(t2 >= 600 && t2 < 5000, `round trip ${t2} ms`);
    } finally {
      c.close();
    }
  });

  it('two latency toxics add up', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ name: 'lat1', type: 'latency', attributes: { latency: 400 } });
    await proxy.addToxic({ name: 'lat2', type: 'latency', attributes: { latency: 400 } });
    const t = await roundTrip(port);
    assert.ok(t >= 700 && t < 6000, `round trip ${t} ms`);
  });

  it('toxicity 0 never applies', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'latency', toxicity: 0, attributes: { latency: 2000 } });
    for (let i = 0; i < 3; i++) assert.ok((await roundTrip(port)) < 1000);
  });

  it('bandwidth limits throughput', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'bandwidth', attributes: { rate: 50 } });
    const payload = Buffer.alloc(60000, 0x61);
    const c = await connect(port);
    try {
      const start = Date.now();
      c.write(payload);
      assert.ok((await c.readExactly(payload.length, 20000)).equals(payload));
      const elapsed = Date.now() - start;
      assert.ok(elapsed >= 700 && elapsed < 15000, `60 kB at 50 KB/s took ${elapsed} ms`);
    } finally {
      c.close();
    }
  });

  it('bandwidth rate 0 stalls until removed', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    const toxic = await proxy.addToxic({ type: 'bandwidth', attributes: { rate: 0 } });
    const c = await connect(port);
    try {
      c.write('ping');
      const stalled = await c.readUntilClosed(800);
      assert.equal(stalled.outcome, 'timeout');
      assert.equal(stalled.data.length, 0);
      await toxic.remove();
      assert.equal((await c.readExactly(4, 5000)).toString(), 'ping');
    } finally {
      c.close();
    }
  });

  it('slow_close delays the close, not the data', async () => {
    const { proxy, port } = await makeProxy(greeter.addr);
    const fast = await connect(port);
    try {
      const r = await fast.readUntilClosed(5000);
      assert.ok(r.data.equals(GREETING));
      assert.equal(r.outcome, 'eof');
      assert.ok(r.elapsed < 500, `close took ${r.elapsed} ms without toxic`);
    } finally {
      fast.close();
    }
    await proxy.addToxic({ type: 'slow_close', attributes: { delay: 800 } });
    const c = await connect(port);
    try {
      const start = Date.now();
      assert.ok((await c.readExactly(GREETING.length, 5000)).equals(GREETING));
      assert.ok(Date.now() - start < 600, 'data arrives before the delayed close');
      const r = await c.readUntilClosed(6000);
      const closed = Date.now() - start;
      assert.equal(r.outcome, 'eof');
      assert.ok(closed >= 600 && closed < 5000, `close after ${closed} ms`);
    } finally {
      c.close();
    }
  });

  it('timeout swallows data and closes after the timeout', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'timeout', attributes: { timeout: 400 } });
    const c = await connect(port);
    try {
      const start = Date.now();
      c.write('ping');
      const r = await c.readUntilClosed(6000);
      const elapsed = Date.now() - start;
      assert.equal(r.data.length, 0);
      assert.ok(['eof', 'reset'].includes(r.outcome), r.outcome);
      assert.ok(elapsed >= 300 && elapsed < 5000, `closed after ${elapsed} ms`);
    } finally {
      c.close();
    }
  });

  it('timeout 0 holds the connection until the toxic is removed, which closes it', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    const toxic = await proxy.addToxic({ type: 'timeout', attributes: { timeout: 0 } });
    const c = await connect(port);
    try {
      c.write('ping');
      const held = await c.readUntilClosed(800);
      assert.equal(held.outcome, 'timeout');
      assert.equal(held.data.length, 0);
      await toxic.remove();
      const r = await c.readUntilClosed(5000);
      assert.ok(['eof', 'reset'].includes(r.outcome), r.outcome);
    } finally {
      c.close();
    }
    assert.ok((await roundTrip(port)) < 1000);
  });

  it('reset_peer resets the connection (ECONNRESET)', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'reset_peer', attributes: { timeout: 0 } });
    const c = await connect(port);
    try {
      c.write('ping');
      const r = await c.readUntilClosed(5000);
      assert.equal(r.data.length, 0);
      assert.equal(r.outcome, 'reset');
    } finally {
      c.close();
    }
  });

  it('reset_peer upstream waits its timeout before resetting', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'reset_peer', stream: 'upstream', attributes: { timeout: 500 } });
    const c = await connect(port);
    try {
      const start = Date.now();
      c.write('ping');
      const r = await c.readUntilClosed(6000);
      const elapsed = Date.now() - start;
      assert.equal(r.outcome, 'reset');
      assert.ok(elapsed >= 400 && elapsed < 5000, `reset after ${elapsed} ms`);
    } finally {
      c.close();
    }
  });

  it('slicer delivers everything in pieces, with delays', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'slicer', attributes: { average_size: 4, size_variation: 0, delay: 25000 } });
    const payload = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyzABCD');
    const c = await connect(port);
    try {
      const start = Date.now();
      c.write(payload);
      assert.ok((await c.readExactly(payload.length, 10000)).equals(payload));
      const elapsed = Date.now() - start;
      assert.ok(c.chunks > 1, `arrived in ${c.chunks} piece(s)`);
      assert.ok(elapsed >= 150 && elapsed < 8000, `took ${elapsed} ms`);
    } finally {
      c.close();
    }
  });

  it('limit_data downstream truncates then closes', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'limit_data', attributes: { bytes: 10 } });
    const c = await connect(port);
    try {
      c.write('abcdefghijklmnopqrstuvwxyz');
      const r = await c.readUntilClosed(5000);
      assert.equal(r.data.toString(), 'abcdefghij');
      assert.ok(['eof', 'reset'].includes(r.outcome), r.outcome);
    } finally {
      c.close();
    }
  });

  it('limit_data upstream lets exactly N bytes reach the server', async () => {
    const sink = await sinkServer();
    try {
      const { proxy, port } = await makeProxy(sink.addr);
      await proxy.addToxic({ type: 'limit_data', stream: 'upstream', attributes: { bytes: 10 } });
      const c = await connect(port);
      try {
        c.write('abcdefghijklmnopqrstuvwxyz');
        const r = await c.readUntilClosed(5000);
        assert.ok(['eof', 'reset'].includes(r.outcome), r.outcome);
      } finally {
        c.close();
      }
      assert.ok(await waitUntil(() => sink.closed[0] === true, 5000), 'upstream connection closed');
      assert.equal(sink.received[0].toString(), 'abcdefghij');
    } finally {
      await sink.close();
    }
  });

  it('noop toxics pass data unchanged', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'noop', stream: 'upstream' });
    await proxy.addToxic({ type: 'noop', stream: 'downstream' });
    const payload = Buffer.alloc(50000, 0x6e);
    const c = await connect(port);
    try {
      c.write(payload);
      assert.ok((await c.readExactly(payload.length)).equals(payload));
    } finally {
      c.close();
    }
  });

  it('reset clears toxics and re-enables on the wire', async () => {
    const { proxy, port } = await makeProxy(echo.addr);
    await proxy.addToxic({ type: 'latency', attributes: { latency: 1500 } });
    await proxy.update({ enabled: false });
    assert.equal(await connectError(port), 'ECONNREFUSED');
    await toxiproxy.reset();
    assert.ok((await roundTrip(port)) < 1000);
  });
});
