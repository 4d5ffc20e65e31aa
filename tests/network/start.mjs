// Start a local AT Protocol network (in-memory PLC directory + reference PDS)
// from @atproto/dev-env for ATCR's integration tests.
//
// Usage:  node start.mjs [plcPort] [pdsPort]
//   Ports come from argv, else ATCR_TESTNET_PLC_PORT / ATCR_TESTNET_PDS_PORT,
//   else 0. 0 means "pick a free port on 127.0.0.1".
//
// Contract with tests/support/pdsnet.py:
//   * stdout carries exactly one line, a JSON object, once the network is ready:
//       {"plc": "http://127.0.0.1:P", "pds": "http://localhost:Q",
//        "pdsDid": "did:web:localhost", "adminPassword": "...", ...}
//     Everything else (console output, warnings) goes to stderr.
//   * SIGTERM / SIGINT -> network.close(), then exit 0.
//   * With ATCR_TESTNET_EXIT_ON_STDIN_EOF=1 it also shuts down when stdin reaches
//     EOF (the launcher died), and then removes ATCR_TESTNET_SCRATCH_DIR (only a
//     dir named atcr-pdsnet-*).
//   * Every server binds 127.0.0.1 only (net.Server.prototype.listen is patched).
//   * Run it with TMPDIR set to a scratch dir: the PDS writes its sqlite files
//     and blobs under os.tmpdir() and never removes them.
//
// Optional hooks (not needed by the basic tests):
//   ATCR_TESTNET_LOOPBACK_HOSTS="a.example.internal,b.internal"
//       comma-separated host names that dns.lookup resolves to 127.0.0.1 in this
//       process (e.g. an https confidential OAuth client_id host).
//   NODE_EXTRA_CA_CERTS=/path/ca.pem
//       extra trusted CAs. Node reads it only from the environment at process
//       start, so the launcher has to set it (TestNetwork(extra_ca_certs=...)).
//   ATCR_TESTNET_ALLOW_DNS=1
//       let lookups of other (non-loopback) names through. By default they fail
//       with ENOTFOUND and are logged to stderr, so nothing leaves the machine.

import dns from 'node:dns'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import process from 'node:process'

const LOOPBACK = '127.0.0.1'

// Keep stdout for the single ready line.
const toStderr = (...args) => console.error(...args)
console.log = toStderr
console.info = toStderr
console.debug = toStderr

const log = (msg) => process.stderr.write(`[start.mjs] ${msg}\n`)

// --- bind everything to 127.0.0.1 -----------------------------------------
const origListen = net.Server.prototype.listen
net.Server.prototype.listen = function listen(...args) {
  const first = args[0]
  if (first === undefined || typeof first === 'function') {
    // listen() / listen(cb)
    return origListen.call(this, 0, LOOPBACK, ...args)
  }
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, cb])
    const rest = args.slice(1)
    if (typeof rest[0] === 'string' || rest[0] === null || rest[0] === undefined) {
      if (rest.length > 0) rest.shift()
    }
    return origListen.call(this, Number(first), LOOPBACK, ...rest)
  }
  if (first && typeof first === 'object' && !('path' in first) && !('fd' in first) && !('_handle' in first) && !('handle' in first)) {
    // listen({port, host, ...}[, cb])
    return origListen.call(this, { ...first, host: LOOPBACK, ipv6Only: false }, ...args.slice(1))
  }
  // unix socket paths, handles: leave alone
  return origListen.apply(this, args)
}

// --- DNS: loopback only -----------------------------------------------------
const loopbackHosts = new Set(
  (process.env.ATCR_TESTNET_LOOPBACK_HOSTS || '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean),
)
const allowDns = process.env.ATCR_TESTNET_ALLOW_DNS === '1'
const origLookup = dns.lookup
const isLocalName = (h) => h === 'localhost' || h.endsWith('.localhost') || net.isIP(h) !== 0
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  const opts = typeof options === 'number' ? { family: options } : options || {}
  const host = String(hostname || '').toLowerCase()
  if (loopbackHosts.has(host)) {
    if (opts.all) return process.nextTick(callback, null, [{ address: LOOPBACK, family: 4 }])
    return process.nextTick(callback, null, LOOPBACK, 4)
  }
  if (!allowDns && !isLocalName(host)) {
    log(`refused non-loopback DNS lookup: ${hostname}`)
    const err = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), {
      code: 'ENOTFOUND',
      errno: -3008,
      syscall: 'getaddrinfo',
      hostname,
    })
    return process.nextTick(callback, err)
  }
  return origLookup.call(this, hostname, options, callback)
}

// --- ports ------------------------------------------------------------------
const freePort = () =>
  new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, LOOPBACK, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })

const portArg = (argIdx, envName) => {
  const raw = process.argv[argIdx] ?? process.env[envName] ?? '0'
  const n = Number.parseInt(raw, 10)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port for ${envName}: ${raw}`)
  return n
}

const main = async () => {
  const t0 = Date.now()
  // Imported after the patches so every module sees them.
  const { TestNetworkNoAppView, ADMIN_PASSWORD } = await import('@atproto/dev-env')

  let plcPort = portArg(2, 'ATCR_TESTNET_PLC_PORT')
  let pdsPort = portArg(3, 'ATCR_TESTNET_PDS_PORT')
  if (plcPort === 0) plcPort = await freePort()
  if (pdsPort === 0) {
    do pdsPort = await freePort()
    while (pdsPort === plcPort)
  }
  const plcUrl = `http://${LOOPBACK}:${plcPort}`

  const network = await TestNetworkNoAppView.create({
    plc: { port: plcPort },
    pds: {
      port: pdsPort,
      hostname: 'localhost', // publicUrl = http://localhost:<port>, handles *.test
      didPlcUrl: plcUrl, // talk to the PLC by IP, not by name
      crawlers: [],
      blobUploadLimit: 104857600, // 100 MiB
      serviceHandleDomains: ['.test'],
    },
  })

  let closing = false
  const shutdown = async (sig) => {
    if (closing) return
    closing = true
    log(`${sig}: closing network`)
    const timer = setTimeout(() => {
      log('close timed out; exiting')
      process.exit(0)
    }, 10_000)
    timer.unref()
    try {
      await network.close()
    } catch (err) {
      log(`close error: ${err?.stack || err}`)
    }
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
  // If the launcher goes away (stdin is a pipe it holds), shut down too, and
  // remove the scratch TMPDIR it can no longer remove itself.
  if (process.env.ATCR_TESTNET_EXIT_ON_STDIN_EOF === '1') {
    process.stdin.on('end', () => {
      const scratch = process.env.ATCR_TESTNET_SCRATCH_DIR
      if (scratch && path.basename(scratch).startsWith('atcr-pdsnet-')) {
        process.once('exit', () => {
          try {
            fs.rmSync(scratch, { recursive: true, force: true })
          } catch {
            // best effort
          }
        })
      }
      void shutdown('stdin EOF')
    })
    process.stdin.resume()
  }

  const cfg = network.pds.ctx.cfg
  const ready = {
    plc: plcUrl,
    pds: cfg.service.publicUrl, // what DID documents advertise as #atproto_pds
    pdsPort: network.pds.port,
    plcPort: network.plc.port,
    pdsDid: cfg.service.did,
    adminPassword: ADMIN_PASSWORD,
    handleDomains: cfg.identity.serviceHandleDomains,
    blobUploadLimit: cfg.service.blobUploadLimit,
    pid: process.pid,
    startupMs: Date.now() - t0,
  }
  process.stdout.write(JSON.stringify(ready) + '\n')
}

main().catch((err) => {
  log(`failed to start: ${err?.stack || err}`)
  process.exit(1)
})
