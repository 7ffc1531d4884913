#!/usr/bin/env node
// Drive xapi-server with Xen Orchestra's real client library, npm `xen-api`
// (pinned in package.json / package-lock.json).
//
// Usage: node xo.mjs URL USER PASSWORD [TRANSPORT]
//   TRANSPORT: json-rpc | xml-rpc | auto (default: auto, the library's default:
//   JSON-RPC on <url>/jsonrpc first, XML-RPC on <url>/xmlrpc after an
//   UnsupportedTransport, i.e. a 2xx answer whose content-type is not
//   application/json).
//
// Prints one line per check ("ok   ..." / "FAIL ..."), then a closing line
// "RESULT passed=N failed=M" that run.sh reads. Exits 0 only if every check
// passed; a 60 s overall timeout exits 1.

import { createClient } from 'xen-api'
// Not re-exported by index.mjs; the package has no "exports" map, so a deep
// import gives the very class the transports throw.
import XapiError from 'xen-api/_XapiError.mjs'

import { CheckFailed, expect, expectEq, isPlainObject, show, startHarness } from './harness.mjs'

const ZERO_UUID = '00000000-0000-0000-0000-000000000000'
const TEST_KEY = 'xapi-rs-xo-test'
const OVERALL_TIMEOUT_MS = 60e3

const [url, user, password, transportArg = 'auto'] = process.argv.slice(2)
if (url === undefined || user === undefined || password === undefined) {
  console.error('usage: node xo.mjs URL USER PASSWORD [json-rpc|xml-rpc|auto]')
  process.exit(2)
}
if (!['json-rpc', 'xml-rpc', 'auto'].includes(transportArg)) {
  console.error(`invalid transport ${transportArg}: expected json-rpc, xml-rpc or auto`)
  process.exit(2)
}
const tag = `xo[${transportArg}]`

const { check, run } = startHarness(tag, OVERALL_TIMEOUT_MS)

// `promise` must reject with an XapiError; returns it
async function expectXapiError(promise) {
  let result
  try {
    result = await promise
  } catch (error) {
    expect(
      error instanceof XapiError,
      `expected an XapiError, got ${error?.constructor?.name}: ${error?.message ?? error}`
    )
    expect(typeof error.code === 'string', `XapiError.code should be a string, got ${show(error.code)}`)
    expect(Array.isArray(error.params), `XapiError.params should be an array, got ${show(error.params)}`)
    return error
  }
  throw new CheckFailed(`expected an XapiError, got success: ${show(result)}`)
}

const opts = {
  url,
  auth: { user, password },
  allowUnauthorized: true,
  watchEvents: false,
  // keep single calls well inside the overall timeout
  callTimeout: 20e3,
}
if (transportArg !== 'auto') {
  opts.transport = transportArg
}

const st = {}
let xapi

async function main() {
  await check('createClient', () => {
    xapi = createClient(opts)
    expectEq(xapi.status, 'disconnected', 'status before connect')
  }, { fatal: true })

  await check(
    'connect(): login (2 params), pool.get_all_records, system.listMethods',
    async () => {
      await xapi.connect()
      expectEq(xapi.status, 'connected', 'status after connect')
      const sid = xapi.sessionId
      expect(typeof sid === 'string' && sid.startsWith('OpaqueRef:'), `sessionId ${show(sid)}`)
      const pool = xapi.pool
      expect(pool != null, 'xapi.pool is set')
      expect(typeof pool.$ref === 'string' && pool.$ref.startsWith('OpaqueRef:'), `pool.$ref ${show(pool.$ref)}`)
      expect(isPlainObject(pool.other_config), `pool.other_config should be an object, got ${show(pool.other_config)}`)
      expect(typeof pool.uuid === 'string' && pool.$id === pool.uuid, 'pool.$id is its uuid')
      expect(typeof pool.master === 'string' && pool.master.startsWith('OpaqueRef:'), `pool.master ${show(pool.master)}`)
      return `session ${sid}, pool ${pool.$ref}`
    },
    { fatal: true }
  )

  await check('pool.get_all_records: exactly one pool', async () => {
    const pools = await xapi.call('pool.get_all_records')
    expect(isPlainObject(pools), `expected an object, got ${show(pools)}`)
    const refs = Object.keys(pools)
    expectEq(refs.length, 1, 'number of pools')
    expectEq(refs[0], xapi.pool.$ref, 'pool ref vs the one found at connect')
    const rec = pools[refs[0]]
    for (const f of ['master', 'other_config', 'uuid', 'name_label']) {
      expect(f in rec, `pool record lacks ${f}`)
    }
    st.master = rec.master
  })

  await check('types discovered from system.listMethods', async () => {
    // The library does not let `call` go without a session: it always prepends
    // it. Its connect sequence uses the internal `_call`, with no session,
    // and derives `_types` from the result. Do the same, and compare.
    const methods = await xapi._call('system.listMethods', [])
    expect(Array.isArray(methods), `system.listMethods should give an array, got ${show(methods)}`)
    for (const m of ['VM.get_all_records', 'session.login_with_password', 'pool.get_all_records']) {
      expect(methods.includes(m), `${m} missing from system.listMethods`)
    }
    const types = methods.filter(m => m.endsWith('.get_all_records')).map(m => m.slice(0, m.indexOf('.')))
    expect(Array.isArray(xapi._types), 'xapi._types is an array')
    expectEq([...xapi._types].sort(), [...types].sort(), 'xapi._types vs types derived from system.listMethods')
    for (const t of ['VM', 'host', 'pool', 'SR', 'VDI', 'network', 'task']) {
      expect(types.includes(t), `class ${t} missing (no ${t}.get_all_records in system.listMethods)`)
    }
    st.types = types
    return `${methods.length} methods, ${types.length} classes`
  })

  for (const type of st.types ?? []) {
    await check(`${type}.get_all_records`, async () => {
      const recs = await xapi.call(`${type}.get_all_records`)
      expect(isPlainObject(recs), `expected an object, got ${show(recs)}`)
      const entries = Object.entries(recs)
      for (const [ref, rec] of entries) {
        expect(ref.startsWith('OpaqueRef:'), `key ${show(ref)} is not an OpaqueRef`)
        expect(isPlainObject(rec), `record ${ref} is not an object: ${show(rec)}`)
        expect(typeof rec.uuid === 'string' && rec.uuid !== '', `record ${ref} has no uuid string: ${show(rec.uuid)}`)
      }
      return `${entries.length} objects`
    })
  }

  await check('getAllRecords("VM"): one running control domain on the master', async () => {
    const vms = await xapi.getAllRecords('VM')
    const doms0 = vms.filter(vm => vm.is_control_domain === true)
    expectEq(doms0.length, 1, 'VMs with is_control_domain === true')
    const dom0 = doms0[0]
    expectEq(dom0.power_state, 'Running', 'dom0 power_state')
    if (st.master !== undefined) expectEq(dom0.resident_on, st.master, 'dom0 resident_on')
    expectEq(dom0.$type, 'VM', 'record $type')
    expectEq(dom0.$id, dom0.uuid, 'record $id')
    st.dom0 = dom0
    return `${vms.length} VMs, dom0 ${dom0.$ref}`
  })

  await check('int64 encoding of host.API_version_major', async () => {
    expect(st.master !== undefined, 'no pool master')
    const major = await xapi.call('host.get_API_version_major', st.master)
    const minor = await xapi.call('host.get_API_version_minor', st.master)
    if (transportArg === 'json-rpc') {
      expectEq([major, minor], [2, 21], 'JSON-RPC: int64 are JSON numbers')
    } else if (transportArg === 'xml-rpc') {
      expectEq([major, minor], ['2', '21'], 'XML-RPC: int64 are strings')
    } else {
      expect(
        show([major, minor]) === show([2, 21]) || show([major, minor]) === show(['2', '21']),
        `API version: got ${show([major, minor])}`
      )
      return typeof major === 'number' ? 'auto picked JSON-RPC' : 'auto fell back to XML-RPC'
    }
  })

  await check('setField / getField: pool.name_description round trip', async () => {
    const ref = xapi.pool.$ref
    st.poolDesc = await xapi.getField('pool', ref, 'name_description')
    for (const value of ['xo test <&> "q" é ✓', '']) {
      await xapi.setField('pool', ref, 'name_description', value)
      expectEq(await xapi.getField('pool', ref, 'name_description'), value, 'name_description after set')
    }
    await xapi.setField('pool', ref, 'name_description', st.poolDesc)
    delete st.poolDesc
  })

  await check('setFieldEntry: pool.other_config (remove_from then add_to, then remove)', async () => {
    const ref = xapi.pool.$ref
    st.poolKey = true
    await xapi.setFieldEntry('pool', ref, 'other_config', TEST_KEY, 'v1')
    await xapi.setFieldEntry('pool', ref, 'other_config', TEST_KEY, 'v2')
    expectEq((await xapi.getField('pool', ref, 'other_config'))[TEST_KEY], 'v2', 'other_config entry')
    const err = await expectXapiError(xapi.call('pool.add_to_other_config', ref, TEST_KEY, 'v3'))
    expectEq(err.code, 'MAP_DUPLICATE_KEY', 'code of a duplicate add_to_other_config')
    expectEq(err.params[err.params.length - 1], TEST_KEY, 'last param of MAP_DUPLICATE_KEY')
    await xapi.setFieldEntry('pool', ref, 'other_config', TEST_KEY, null)
    delete st.poolKey
    expect(!(TEST_KEY in (await xapi.getField('pool', ref, 'other_config'))), 'entry still present after removal')
  })

  await check('VM.get_by_uuid(zero uuid) -> XapiError UUID_INVALID [VM, uuid]', async () => {
    const err = await expectXapiError(xapi.call('VM.get_by_uuid', ZERO_UUID))
    expectEq(err.code, 'UUID_INVALID', 'code')
    expectEq(err.params, ['VM', ZERO_UUID], 'params')
  })

  await check('VM.get_record(OpaqueRef:nonsense) -> XapiError HANDLE_INVALID [VM, ref]', async () => {
    const err = await expectXapiError(xapi.call('VM.get_record', 'OpaqueRef:nonsense'))
    expectEq(err.code, 'HANDLE_INVALID', 'code')
    expectEq(err.params, ['VM', 'OpaqueRef:nonsense'], 'params')
  })

  await check('VM.no_such_message -> XapiError MESSAGE_METHOD_UNKNOWN', async () => {
    const err = await expectXapiError(xapi.call('VM.no_such_message', st.dom0?.$ref ?? 'OpaqueRef:NULL'))
    expectEq(err.code, 'MESSAGE_METHOD_UNKNOWN', 'code')
    expectEq(err.params[0], 'VM.no_such_message', 'params[0]')
  })

  await check('disconnect()', async () => {
    const sid = xapi.sessionId
    await xapi.disconnect()
    expectEq(xapi.status, 'disconnected', 'status after disconnect')
    // disconnect() fires session.logout without waiting for it; the session
    // must be gone shortly after.
    let err
    for (let i = 0; i < 20; i++) {
      try {
        await xapi._call('VM.get_all', [sid])
      } catch (error) {
        err = error
        break
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    expect(err instanceof XapiError, `old session still works 2 s after disconnect (${err?.message ?? 'no error'})`)
    expectEq([err.code, ...err.params], ['SESSION_INVALID', sid], 'error with the old session')
  })
}

async function cleanup() {
  if (xapi === undefined || xapi.status !== 'connected') return
  const ref = xapi.pool?.$ref
  try {
    if (st.poolDesc !== undefined) await xapi.setField('pool', ref, 'name_description', st.poolDesc)
    if (st.poolKey) await xapi.call('pool.remove_from_other_config', ref, TEST_KEY)
  } catch (error) {
    console.log(`warn cleanup: ${error?.message ?? error}`)
  }
  try {
    await xapi.disconnect()
  } catch {}
}

await run(main, cleanup)
