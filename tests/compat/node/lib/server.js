'use strict';
// Starts (and stops) the downtime server under test for one test file.
//
// Environment:
//   DOWNTIME_BIN  path of the downtime binary (default: <repo>/target/debug/downtime)
//   DOWNTIME_API  http://host:port of an already running server to use instead

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { sleep } = require('./net');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const STARTUP_TIMEOUT_MS = 30000;

async function versionAnswers(url) {
  try {
    const res = await fetch(`${url}/version`, { signal: AbortSignal.timeout(1000) });
    await res.text();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** The port from the line `downtime serve` prints once bound, or null before it. */
function boundPort(logPath) {
  const text = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '';
  const m = text.match(/^downtime API listening on http:\/\/127\.0\.0\.1:(\d+)$/m);
  return m ? Number(m[1]) : null;
}

let started = 0;

// Port 0: the kernel picks, so parallel test files can never race for one port.
// `--db :memory:` keeps the suite from writing a history file into the repo.
async function startOnce(binary) {
  started += 1;
  const logPath = path.join(os.tmpdir(), `downtime-node-${process.pid}-${started}.log`);
  const logFd = fs.openSync(logPath, 'w');
  const child = spawn(binary, ['serve', '--host', '127.0.0.1', '--port', '0', '--db', ':memory:'], {
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  let exited = false;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', () => {
      exited = true;
      resolve();
    });
  });
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline && !exited) {
    const port = boundPort(logPath);
    const url = `http://127.0.0.1:${port}`;
    if (port !== null && (await versionAnswers(url))) {
      return { url, port, child, exitPromise, logPath };
    }
    await sleep(100);
  }
  if (!exited) {
    child.kill('SIGKILL');
    await Promise.race([exitPromise, sleep(10000)]);
  }
  const log = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '';
  fs.rmSync(logPath, { force: true });
  return { failed: true, log };
}

/** Starts a server on a kernel-chosen 127.0.0.1 port; returns { url, stop() }. */
async function startServer() {
  if (process.env.DOWNTIME_API) {
    return { url: process.env.DOWNTIME_API.replace(/\/$/, ''), stop: async () => {} };
  }
  const binary = process.env.DOWNTIME_BIN || path.join(REPO, 'target', 'debug', 'downtime');
  if (!fs.existsSync(binary)) {
    throw new Error(`downtime binary not found at ${binary} (run cargo build -p downtime)`);
  }
  let lastLog = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const started = await startOnce(binary);
    if (started.failed) {
      lastLog = started.log;
      continue;
    }
    const { url, child, exitPromise, logPath } = started;
    return {
      url,
      pid: child.pid,
      async stop() {
        // Stop exactly the process we started.
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const done = await Promise.race([exitPromise.then(() => true), sleep(10000).then(() => false)]);
          if (!done) {
            child.kill('SIGKILL');
            await Promise.race([exitPromise, sleep(10000)]);
          }
        }
        fs.rmSync(logPath, { force: true });
      },
    };
  }
  throw new Error(`downtime did not answer GET /version within ${STARTUP_TIMEOUT_MS} ms; log:\n${lastLog}`);
}

module.exports = { startServer, REPO };
