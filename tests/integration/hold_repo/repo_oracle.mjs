// The reference implementation (@atproto/repo, from @atproto/dev-env's node_modules) as a
// test oracle for the hold's repository. One JSON request per stdin line, one JSON answer per
// stdout line, so a test session starts Node once.
//
// Run: node repo_oracle.mjs   with ATCR_NODE_MODULES_PARENT=<dir that holds node_modules>.
// The packages are ES modules, which ignore NODE_PATH; createRequire() resolves them from
// that directory instead.
//
// Requests ({"op": ..., ...}; bytes are base64):
//   mst           {steps: [["put", key, cid] | ["del", key]]}   -> {roots: [cid after each step]}
//   verifyRepo    {car, did, didKey}        -> {commit: {cid, rev}, records: [{collection, rkey, cid, value}]}
//   verifyProofs  {car, did, didKey, claims: [{collection, rkey, cid|null}]} -> {verified, unverified}
//   verifyRecords {car, did, didKey}        -> {records: [{collection, rkey, value}]}
//   verifyDiff    {prevCar, car, did, didKey} -> {writes: [{action, collection, rkey, cid}], rev}
//   verifySig     {commitCar, didKey}       -> {valid}
import { createRequire } from 'node:module'
import path from 'node:path'
import readline from 'node:readline'
import { pathToFileURL } from 'node:url'

const parent = process.env.ATCR_NODE_MODULES_PARENT
if (!parent) throw new Error('ATCR_NODE_MODULES_PARENT is not set')
const require = createRequire(path.join(parent, 'oracle.cjs'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

const repo = await load('@atproto/repo')
const lexData = await load('@atproto/lex-data')
const lexJson = await load('@atproto/lex-json')

const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'))
const cidStr = (cid) => (cid ? cid.toString() : null)

const handlers = {
  async mst({ steps }) {
    const storage = new repo.MemoryBlockstore()
    let mst = await repo.MST.create(storage)
    const roots = []
    for (const step of steps) {
      if (step[0] === 'put') {
        const cid = lexData.parseCid(step[2])
        mst = (await mst.get(step[1])) ? await mst.update(step[1], cid) : await mst.add(step[1], cid)
      } else {
        mst = await mst.delete(step[1])
      }
      roots.push((await mst.getPointer()).toString())
    }
    return { roots }
  },

  async verifyRepo({ car, did, didKey }) {
    const carBytes = bytes(car)
    const verified = await repo.verifyRepoCar(carBytes, did, didKey)
    const { root, blocks } = await repo.readCarWithRoot(carBytes)
    const storage = new repo.MemoryBlockstore(blocks)
    const loaded = await repo.Repo.load(storage, root)
    const records = []
    for await (const rec of loaded.walkRecords()) {
      records.push({
        collection: rec.collection,
        rkey: rec.rkey,
        cid: rec.cid.toString(),
        value: lexJson.lexToJson(rec.record),
      })
    }
    return {
      commit: { cid: verified.commit.cid.toString(), rev: verified.commit.rev },
      creates: verified.creates.map((c) => ({ collection: c.collection, rkey: c.rkey, cid: c.cid.toString() })),
      records,
      version: loaded.version,
      did: loaded.did,
    }
  },

  async verifyProofs({ car, did, didKey, claims }) {
    const parsed = claims.map((c) => ({
      collection: c.collection,
      rkey: c.rkey,
      cid: c.cid ? lexData.parseCid(c.cid) : null,
    }))
    const res = await repo.verifyProofs(bytes(car), parsed, did, didKey)
    const fmt = (c) => ({ collection: c.collection, rkey: c.rkey, cid: cidStr(c.cid) })
    return { verified: res.verified.map(fmt), unverified: res.unverified.map(fmt) }
  },

  async verifyRecords({ car, did, didKey }) {
    const records = await repo.verifyRecords(bytes(car), did, didKey)
    return {
      records: records.map((r) => ({ collection: r.collection, rkey: r.rkey, value: lexJson.lexToJson(r.record) })),
    }
  },

  async verifyDiff({ prevCar, car, did, didKey }) {
    const prev = await repo.readCarWithRoot(bytes(prevCar))
    const prevRepo = await repo.Repo.load(new repo.MemoryBlockstore(prev.blocks), prev.root)
    const diff = await repo.verifyDiffCar(prevRepo, bytes(car), did, didKey)
    return {
      rev: diff.commit.rev,
      writes: diff.writes.map((w) => ({
        action: w.action,
        collection: w.collection,
        rkey: w.rkey,
        cid: cidStr(w.cid),
      })),
    }
  },

  async verifySig({ commitCar, didKey }) {
    const { root, blocks } = await repo.readCarWithRoot(bytes(commitCar))
    const storage = new repo.MemoryBlockstore(blocks)
    const commit = await storage.readObj(root, repo.def.commit)
    return { valid: await repo.verifyCommitSig(commit, didKey) }
  },
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of rl) {
  if (!line.trim()) continue
  let answer
  try {
    const request = JSON.parse(line)
    const handler = handlers[request.op]
    if (!handler) throw new Error(`unknown op ${request.op}`)
    answer = { ok: true, result: await handler(request) }
  } catch (err) {
    answer = { ok: false, error: `${err?.name ?? 'Error'}: ${err?.message ?? err}` }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}
