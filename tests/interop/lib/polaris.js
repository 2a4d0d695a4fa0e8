'use strict';
/*
 * polaris.js: a Polaris client built from the repository's own protos.
 *
 * No Polaris SDK exists for Node, so this is @grpc/grpc-js with
 * @grpc/proto-loader loading proto/polaris_grpcapi.proto (and what it
 * imports) at run time, with /usr/include on the import path for the
 * google/protobuf well-known types. Messages keep the proto field names
 * (keepCase) and wrapper types stay explicit ({value: ...}), so what a test
 * builds is what goes on the wire, field for field; the tests use that to
 * replay exactly what polaris-go and polaris-cpp send.
 *
 * Also here: the Polaris response codes by name (read from
 * proto/polaris_code.proto, not hard-coded), wrapper helpers, and a
 * Discover stream wrapper that pairs requests with answers.
 */
const path = require('node:path');
const { requireClient, sourceDir } = require('./lodestar');

const grpc = requireClient('@grpc/grpc-js');
const protoLoader = requireClient('@grpc/proto-loader');

const LOAD_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: [path.join(sourceDir(), 'proto'), '/usr/include'],
};

let loaded = null;

/* Loads the protos once: {v1, health, Code}. */
function load() {
  if (loaded) return loaded;
  const files = ['polaris_grpcapi.proto', 'polaris_code.proto', 'health.proto'];
  const def = protoLoader.loadSync(files, LOAD_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def);
  const Code = {};
  for (const v of def['v1.Code'].type.value) Code[v.name] = v.number;
  loaded = { v1: pkg.v1, health: pkg.grpc.health.v1, Code };
  return loaded;
}

const S = (value) => ({ value }); /* StringValue / UInt32Value / BoolValue */
const unwrap = (w) => (w === null || w === undefined ? undefined : w.value);

/* Clients for one gRPC address ("127.0.0.1:port"). */
function clients(address) {
  const { v1, health } = load();
  const creds = grpc.credentials.createInsecure();
  return {
    naming: new v1.PolarisGRPC(address, creds),
    heartbeat: new v1.PolarisHeartbeatGRPC(address, creds),
    health: new health.Health(address, creds),
    close() {
      this.naming.close();
      this.heartbeat.close();
      this.health.close();
    },
  };
}

/* A unary call as a promise, with a deadline and optional metadata. */
function unary(client, method, request, { timeoutMs = 10000, metadata } = {}) {
  return new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata || {})) md.set(k, v);
    client[method](request, md, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/*
 * One long-lived Discover stream, used as the SDKs use it: requests go out
 * on the same stream, answers come back on it. send() queues a request;
 * next() resolves the next answer in arrival order; ask() is send + next.
 */
class DiscoverStream {
  constructor(namingClient, { metadata } = {}) {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata || {})) md.set(k, v);
    this.call = namingClient.Discover(md);
    this.answers = [];
    this.waiters = [];
    this.error = null;
    this.ended = false;
    this.call.on('data', (msg) => {
      const w = this.waiters.shift();
      if (w) w.resolve(msg);
      else this.answers.push(msg);
    });
    this.call.on('error', (e) => {
      this.error = e;
      for (const w of this.waiters.splice(0)) w.reject(e);
    });
    this.call.on('end', () => {
      this.ended = true;
      const e = new Error('Discover stream ended by the server');
      for (const w of this.waiters.splice(0)) w.reject(e);
    });
    this.call.on('status', (s) => {
      this.status = s;
    });
  }

  send(req) {
    this.call.write(req);
  }

  next(timeoutMs = 10000) {
    if (this.answers.length) return Promise.resolve(this.answers.shift());
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.reject(new Error('Discover stream ended by the server'));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no Discover answer within ${timeoutMs} ms`));
      }, timeoutMs);
      w.resolve = (m) => {
        clearTimeout(t);
        resolve(m);
      };
      w.reject = (e) => {
        clearTimeout(t);
        reject(e);
      };
      this.waiters.push(w);
    });
  }

  ask(req, timeoutMs) {
    this.send(req);
    return this.next(timeoutMs);
  }

  /* Half-close and wait for the server to finish the call (status OK). */
  close(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      if (this.status) return resolve(this.status);
      const t = setTimeout(() => {
        this.call.cancel();
        reject(new Error(`Discover stream not finished by the server within ${timeoutMs} ms of half-close`));
      }, timeoutMs);
      this.call.once('status', (s) => {
        clearTimeout(t);
        resolve(s);
      });
      this.call.end();
    });
  }
}

/* A DiscoverRequest the way polaris-go builds it: name, namespace, the
 * revision it holds ("" at first) and an empty business. */
function discoverRequest(type, namespace, service, revision = '') {
  return {
    type,
    service: { name: S(service), namespace: S(namespace), revision: S(revision), business: S('') },
  };
}

module.exports = { grpc, load, clients, unary, DiscoverStream, discoverRequest, S, unwrap };
