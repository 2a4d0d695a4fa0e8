'use strict';
/*
 * lodestar.js: the interop harness. Starts the real supervisor
 * (LODESTAR_BIN_DIR/lodestar) on a temporary YAML file with its private
 * PostgreSQL and free loopback ports, waits until it serves, and stops it.
 *
 * Rules it keeps:
 *  - One temporary directory per instance under /tmp, mode 0755 (the private
 *    PostgreSQL runs as user postgres and must reach its data directory).
 *  - The supervisor runs under `setpriv --pdeathsig TERM`, so it stops even
 *    if this Node process dies without running its hooks; stop() sends
 *    SIGTERM, expects exit 0 within 10 s and SIGKILLs the process group
 *    otherwise. A process-exit hook stops anything still running.
 *  - A run is clean only if the supervisor exited 0 and its log (every
 *    process writes there, sanitizer reports included) holds no sanitizer
 *    report and no child that ended with a failure; otherwise stop() prints
 *    the log tail and throws.
 *  - Listeners are a parameter: each is {name, protocol}; the harness picks
 *    a free port for each. A polaris-http listener is always present, as
 *    GET /healthz on it is how readiness is judged.
 */
const assert = require('node:assert/strict');
const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

/* The listeners of a Polaris deployment (names as in deploy/lodestar.yaml). */
const POLARIS_LISTENERS = Object.freeze([
  Object.freeze({ name: 'polaris-http', protocol: 'polaris-http' }),
  Object.freeze({ name: 'polaris-grpc-naming', protocol: 'polaris-grpc' }),
  Object.freeze({ name: 'polaris-grpc-config', protocol: 'polaris-grpc' }),
]);

/* Log lines that make a run unclean (same list as tests/support/lstest.c). */
const BAD_LOG_LINES = [
  'ERROR: AddressSanitizer',
  'ERROR: LeakSanitizer',
  'runtime error:',
  'stopped: exit 1',
  'stopped: exit 2',
  'stopped: exit 23',
  'stopped: signal',
  'exited unexpectedly (exit',
];

const READY_TIMEOUT_MS = 60000;
const STOP_TIMEOUT_MS = 10000;

const running = new Set();
process.on('exit', () => {
  /* last resort: only synchronous calls work here */
  for (const ls of running) {
    try {
      process.kill(-ls.pid, 'SIGKILL');
    } catch (e) {
      /* already gone */
    }
  }
});

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/* A free TCP port on 127.0.0.1 (bound and released), never one of `taken`. */
async function freePort(taken = new Set()) {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const p = srv.address().port;
        srv.close(() => resolve(p));
      });
    });
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
}

function binDir() {
  const dir = process.env.LODESTAR_BIN_DIR;
  if (!dir) throw new Error('LODESTAR_BIN_DIR is not set (run through ctest, or export it: build-asan/bin)');
  return dir;
}

/* Directory of the repository (for proto/ and fixtures). */
function sourceDir() {
  return process.env.LODESTAR_SOURCE_DIR || path.resolve(__dirname, '..', '..', '..');
}

/* require() of a client library from tests/interop/package.json, with a
 * message that says how to install it when it is missing. */
function requireClient(name) {
  try {
    return require(name);
  } catch (e) {
    if (e.code === 'MODULE_NOT_FOUND' && e.message.includes(`'${name}'`)) {
      throw new Error(`${name} is not installed: run ./dev.sh test, or \`npm ci\` in tests/interop`);
    }
    throw e;
  }
}

/*
 * One HTTP request to 127.0.0.1:port. `body` (an object) is sent as JSON.
 * Resolves {status, headers, text, json} (json is null when the body is not
 * JSON); rejects on a transport error or after timeoutMs.
 */
function httpRequest(port, method, urlPath, body, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: urlPath,
        agent: false,
        headers: payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {},
        timeout: timeoutMs,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json = null;
          try {
            json = JSON.parse(text);
          } catch (e) {
            json = null;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} on port ${port}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/* Runs `lodestar status -c FILE`; resolves true when the supervisor is
 * running and every process is ready (or disabled). */
function statusAllReady(configPath) {
  return new Promise((resolve) => {
    execFile(path.join(binDir(), 'lodestar'), ['status', '-c', configPath], { timeout: 5000 }, (err, stdout) => {
      if (err) return resolve(false);
      const lines = stdout.split('\n').filter((l) => l.trim() !== '');
      if (lines.length < 3 || !/^supervisor pid \d+, running,/.test(lines[0])) return resolve(false);
      /* lines[1] is the header: ROLE KIND PID STATE ... */
      for (const line of lines.slice(2)) {
        const state = line.trim().split(/\s+/)[3];
        if (state !== 'ready' && state !== 'disabled') return resolve(false);
      }
      resolve(true);
    });
  });
}

function tail(file, lines = 60) {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(-lines).join('\n');
  } catch (e) {
    return `(no log at ${file}: ${e.message})`;
  }
}

/* Lines around each unclean marker in the log, or '' when the log is clean. */
function uncleanExcerpt(logText) {
  const lines = logText.split('\n');
  const out = [];
  for (const bad of BAD_LOG_LINES) {
    const i = lines.findIndex((l) => l.includes(bad));
    if (i >= 0) out.push(`--- '${bad}' at log line ${i + 1}:\n${lines.slice(Math.max(0, i - 2), i + 20).join('\n')}`);
  }
  return out.join('\n');
}

class Lodestar {
  constructor(opts) {
    this.listeners = opts.listeners;
    this.extraYaml = opts.extraYaml || '';
    this.loggingExtra = opts.loggingExtra || '';
    this.dir = null;
    this.config = null;
    this.log = null;
    this.runtimeDir = null;
    this.ports = {};
    this.child = null;
    this.pid = 0;
    this.exitInfo = null; /* {code, signal} once the supervisor exited */
    this.exited = null; /* promise resolved with exitInfo */
  }

  /* Port of the listener called `name`. */
  port(name) {
    const p = this.ports[name];
    if (!p) throw new Error(`no listener called ${name} (have: ${Object.keys(this.ports).join(', ')})`);
    return p;
  }

  /* "127.0.0.1:port" of a listener, as a gRPC client target. */
  address(name) {
    return `127.0.0.1:${this.port(name)}`;
  }

  /* Port of the first listener speaking `protocol`. */
  portOf(protocol) {
    const l = this.listeners.find((x) => x.protocol === protocol);
    if (!l) throw new Error(`no listener speaks ${protocol}`);
    return this.ports[l.name];
  }

  yaml() {
    const ls = this.listeners
      .map((l) => `  - {name: ${l.name}, protocol: ${l.protocol}, address: 127.0.0.1, port: ${this.ports[l.name]}}\n`)
      .join('');
    return (
      `runtime_dir: ${this.runtimeDir}\n` +
      'logging:\n  level: info\n' +
      this.loggingExtra +
      'supervisor:\n' +
      '  restart_backoff_initial_ms: 100\n' +
      '  ping_interval_ms: 500\n' +
      '  shutdown_timeout_ms: 8000\n' +
      '  drain_timeout_ms: 3000\n' +
      'store:\n' +
      '  embedded:\n' +
      `    data_dir: ${this.dir}/pgdata\n` +
      'listeners:\n' +
      ls +
      this.extraYaml
    );
  }

  async prepare() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lodestar-interop-'));
    fs.chmodSync(this.dir, 0o755);
    this.config = path.join(this.dir, 'lodestar.yaml');
    this.log = path.join(this.dir, 'lodestar.log');
    this.runtimeDir = path.join(this.dir, 'run');
    const taken = new Set();
    for (const l of this.listeners) this.ports[l.name] = await freePort(taken);
    fs.writeFileSync(this.config, this.yaml());
  }

  spawn() {
    const exe = path.join(binDir(), 'lodestar');
    fs.accessSync(exe, fs.constants.X_OK);
    const fd = fs.openSync(this.log, 'a', 0o644);
    try {
      this.child = spawn('setpriv', ['--pdeathsig', 'TERM', exe, '-c', this.config], {
        stdio: ['ignore', fd, fd],
        detached: true, /* own process group: a SIGKILL fallback reaches every child */
      });
    } finally {
      fs.closeSync(fd);
    }
    this.pid = this.child.pid;
    running.add(this);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(this);
        resolve(this.exitInfo);
      });
    });
    this.child.once('error', (e) => {
      this.exitInfo = { code: 127, signal: null, error: e };
      running.delete(this);
    });
  }

  /* Wait until /healthz answers 200 and every process is ready. */
  async waitReady(timeoutMs) {
    const end = Date.now() + timeoutMs;
    const httpPort = this.portOf('polaris-http');
    let healthy = false;
    while (Date.now() < end) {
      if (this.exitInfo) throw new Error(`lodestar exited during start-up: ${JSON.stringify(this.exitInfo)}`);
      if (!healthy) {
        try {
          const r = await httpRequest(httpPort, 'GET', '/healthz', undefined, 2000);
          healthy = r.status === 200;
        } catch (e) {
          healthy = false;
        }
      }
      if (healthy && (await statusAllReady(this.config))) return;
      await sleep(100);
    }
    throw new Error(`lodestar not ready within ${timeoutMs} ms (healthz ${healthy ? 'answered 200' : 'never answered 200'})`);
  }

  /*
   * SIGTERM the supervisor and wait (bounded) for exit 0; check the log;
   * remove the temporary directory. Throws (after cleaning up) when the
   * stop or the run was not clean. Safe to call more than once.
   */
  async stop() {
    const problems = [];
    if (this.child && !this.exitInfo) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch (e) {
        /* exited meanwhile */
      }
      let timer = null;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        problems.push(`lodestar did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; killed`);
        try {
          process.kill(-this.pid, 'SIGKILL');
        } catch (e) {
          /* gone */
        }
        await this.exited;
      }
    }
    if (this.exitInfo && !problems.length && (this.exitInfo.code !== 0 || this.exitInfo.signal)) {
      problems.push(`lodestar exited with ${JSON.stringify(this.exitInfo)}, expected exit 0`);
    }
    if (this.log && fs.existsSync(this.log)) {
      const excerpt = uncleanExcerpt(fs.readFileSync(this.log, 'utf8'));
      if (excerpt) problems.push(`unclean log ${this.log}:\n${excerpt}`);
    }
    if (problems.length) {
      process.stderr.write(`--- tail of ${this.log} ---\n${tail(this.log)}\n`);
    }
    if (this.dir && !process.env.LODESTAR_KEEP_TEST_DIRS) {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    this.child = null;
    if (problems.length) throw new Error(problems.join('\n'));
  }
}

/*
 * Start Lodestar and wait until it serves.
 *   listeners:   [{name, protocol}] (default POLARIS_LISTENERS); a
 *                polaris-http listener is added when none is given
 *   extraYaml:   top-level YAML appended to the file
 *   loggingExtra: lines under `logging:` (indented two spaces)
 *   readyTimeoutMs: default 60 s
 * On failure the log tail is printed, the instance is stopped and the
 * error is thrown.
 */
async function startLodestar(opts = {}) {
  const listeners = [...(opts.listeners || POLARIS_LISTENERS)];
  if (!listeners.some((l) => l.protocol === 'polaris-http')) listeners.push(POLARIS_LISTENERS[0]);
  const ls = new Lodestar({ ...opts, listeners });
  await ls.prepare();
  ls.spawn();
  try {
    await ls.waitReady(opts.readyTimeoutMs || READY_TIMEOUT_MS);
  } catch (e) {
    process.stderr.write(`--- tail of ${ls.log} ---\n${tail(ls.log)}\n`);
    try {
      await ls.stop();
    } catch (stopErr) {
      e.message += `\nand stopping it failed too: ${stopErr.message}`;
    }
    throw e;
  }
  return ls;
}

/* Poll `fn` until it resolves a truthy value; returns that value. Throws
 * with `what` and the last value seen after timeoutMs. */
async function waitFor(what, fn, timeoutMs = 5000, intervalMs = 50) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= end) break;
    await sleep(intervalMs);
  }
  assert.fail(`${what}: not reached within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

module.exports = {
  POLARIS_LISTENERS,
  Lodestar,
  startLodestar,
  httpRequest,
  freePort,
  requireClient,
  sourceDir,
  sleep,
  waitFor,
};
