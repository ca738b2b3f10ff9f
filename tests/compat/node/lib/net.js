'use strict';
// Small TCP servers and a buffered client connection for the node compatibility suite.
// Everything binds to 127.0.0.1 and every wait is bounded.

const net = require('node:net');

const LONG_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A port that was free on 127.0.0.1 a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts a TCP server on 127.0.0.1:0 whose connections are handled by onConn(socket). */
async function startTcpServer(onConn) {
  const sockets = new Set();
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    onConn(sock);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  return {
    port,
    addr: `127.0.0.1:${port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}

/** Echoes every byte back. */
function echoServer() {
  return startTcpServer((sock) => sock.pipe(sock));
}

const GREETING = Buffer.from('hello from upstream\n');

/** Sends GREETING, then closes. */
function greeterServer() {
  return startTcpServer((sock) => sock.end(GREETING));
}

/** Records what each client sends; never answers. `received[i]` / `closed[i]` per connection. */
async function sinkServer() {
  const received = [];
  const closed = [];
  const srv = await startTcpServer((sock) => {
    const idx = received.length;
    received.push(Buffer.alloc(0));
    closed.push(false);
    sock.on('data', (d) => {
      received[idx] = Buffer.concat([received[idx], d]);
    });
    sock.on('close', () => {
      closed[idx] = true;
    });
  });
  return Object.assign(srv, { received, closed });
}

/** A client connection that buffers everything and remembers how it ended. */
class Conn {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.chunks = 0;
    this.outcome = null; // 'eof' | 'reset' | 'error:<code>'
    this.waiters = new Set();
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.chunks += 1;
      this.notify();
    });
    sock.on('end', () => {
      if (!this.outcome) this.outcome = 'eof';
      this.notify();
    });
    sock.on('error', (err) => {
      if (!this.outcome) this.outcome = err.code === 'ECONNRESET' ? 'reset' : `error:${err.code}`;
      this.notify();
    });
    sock.on('close', () => {
      if (!this.outcome) this.outcome = 'eof';
      this.notify();
    });
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves with true once pred() holds, false after timeoutMs. */
  waitFor(pred, timeoutMs) {
    return new Promise((resolve) => {
      if (pred()) return resolve(true);
      let timer = null;
      const check = () => {
        if (pred()) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve(true);
        }
      };
      timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  write(data) {
    this.sock.write(data);
  }

  /** Takes exactly n buffered bytes (waiting up to timeoutMs), or throws. */
  async readExactly(n, timeoutMs = LONG_MS) {
    const ok = await this.waitFor(() => this.buf.length >= n || this.outcome !== null, timeoutMs);
    if (this.buf.length < n) {
      throw new Error(`wanted ${n} bytes, got ${this.buf.length} (${ok ? this.outcome : 'timeout'})`);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Waits for the end of the connection: { data, outcome: 'eof'|'reset'|'timeout'|..., elapsed }. */
  async readUntilClosed(timeoutMs = LONG_MS) {
    const start = Date.now();
    const ended = await this.waitFor(() => this.outcome !== null, timeoutMs);
    const data = this.buf;
    this.buf = Buffer.alloc(0);
    return { data, outcome: ended ? this.outcome : 'timeout', elapsed: Date.now() - start };
  }

  close() {
    this.sock.destroy();
  }
}

/** Connects to 127.0.0.1:port; resolves with a Conn. */
function connect(port, timeoutMs = LONG_MS) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to ${port} timed out`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeListener('error', reject);
      resolve(new Conn(sock));
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Resolves with the error code of a failed connection attempt (throws if it connects). */
async function connectError(port) {
  try {
    const c = await connect(port);
    c.close();
  } catch (err) {
    return err.code || String(err);
  }
  throw new Error(`connection to ${port} unexpectedly succeeded`);
}

/** Sends payload through an echo proxy; resolves with the round-trip time in ms. */
async function roundTrip(port, payload = Buffer.from('ping'), conn = null) {
  const own = conn === null;
  const c = own ? await connect(port) : conn;
  try {
    const start = Date.now();
    c.write(payload);
    const got = await c.readExactly(payload.length);
    const elapsed = Date.now() - start;
    if (!got.equals(payload)) throw new Error('echo mismatch');
    return elapsed;
  } finally {
    if (own) c.close();
  }
}

/** Polls pred until truthy or timeoutMs passes; resolves with its last value. */
async function waitUntil(pred, timeoutMs = LONG_MS, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v || Date.now() >= deadline) return v;
    await sleep(intervalMs);
  }
}

function portOf(listen) {
  return Number(listen.slice(listen.lastIndexOf(':') + 1));
}

module.exports = {
  LONG_MS,
  GREETING,
  sleep,
  freePort,
  echoServer,
  greeterServer,
  sinkServer,
  connect,
  connectError,
  roundTrip,
  waitUntil,
  portOf,
};
