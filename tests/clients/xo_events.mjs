#!/usr/bin/env node
// Drive xapi-server with Xen Orchestra's npm `xen-api` WITH EVENTS ON (the
// library's default `watchEvents`): its object cache, fed by `event.from`,
// must follow changes made by another client, deletions, tasks
// (`callAsync`) and `barrier()`.
//
// Usage: node xo_events.mjs URL USER PASSWORD TRANSPORT
//   TRANSPORT: json-rpc | xml-rpc
//
// The change "made by another client" is made by the Python SDK through
// py_set_label.py (run with .venv/bin/python next to this file).
//
// Prints one line per check ("ok   ..." / "FAIL ..."), then a closing line
// "RESULT passed=N failed=M" that run.sh reads. Exits 0 only if every check
// passed; a 60 s overall timeout exits 1.

import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'

import { createClient } from 'xen-api'
// Not re-exported by index.mjs; the package has no "exports" map, so a deep
// import gives the very class the transports throw.
import XapiError from 'xen-api/_XapiError.mjs'

import { CheckFailed, describeError, expect, expectEq, isPlainObject, show, startHarness } from './harness.mjs'

const OVERALL_TIMEOUT_MS = 60e3
// how long after a change returned XO's cache may take to show it
const EVENT_LATENCY_LIMIT_MS = 1e3
const TMP_VM_LABEL = 'xo-events-tmp'
const BARRIER_PREFIX = 'xo:barrier:'

const here = dirname(fileURLToPath(import.meta.url))
const PYTHON = join(here, '.venv', 'bin', 'python')
const PY_SET_LABEL = join(here, 'py_set_label.py')

const [url, user, password, transportArg] = process.argv.slice(2)
if (url === undefined || user === undefined || password === undefined || transportArg === undefined) {
  console.error('usage: node xo_events.mjs URL USER PASSWORD json-rpc|xml-rpc')
  process.exit(2)
}
if (!['json-rpc', 'xml-rpc'].includes(transportArg)) {
  console.error(`invalid transport ${transportArg}: expected json-rpc or xml-rpc`)
  process.exit(2)
}
const tag = `xo-events[${transportArg}]`

const { check, run } = startHarness(tag, OVERALL_TIMEOUT_MS)

const isRef = v => typeof v === 'string' && v.startsWith('OpaqueRef:') && v !== 'OpaqueRef:NULL'
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const fmtMs = ms => `${ms.toFixed(1)} ms`
// "12.3 ms after X" / "0.4 ms before X"
const rel = (ms, what) => (ms < 0 ? `${fmtMs(-ms)} before ${what}` : `${fmtMs(ms)} after ${what}`)

// reject with a CheckFailed if `promise` has not settled after `ms`
function withTimeout(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      t = setTimeout(() => reject(new CheckFailed(`${what}: not settled after ${ms / 1e3} s`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

// ---------------------------------------------------------------------------
// Instrumentation: what the library says and does.

// The library reports event-loop trouble with console.warn('_watchEvents', e),
// console.warn('_refreshCachedRecords', type, e), console.warn('_watchEventsLegacy', e).
const warnings = []
console.warn = (...args) => {
  const text = args.map(a => (typeof a === 'string' ? a : describeError(a))).join(' ')
  warnings.push(text)
  console.log(`warn (library) ${text.length > 500 ? text.slice(0, 500) + '…' : text}`)
}

const unhandled = []
process.on('unhandledRejection', error => {
  unhandled.push(describeError(error))
  console.log(`warn unhandled rejection: ${describeError(error)}`)
})

const eventFetchingErrors = []
let eventFetchingSuccesses = 0

// Every RPC the library makes goes through `_call` (method, params incl. the
// session, optional timeout); wrap it to log method, params and outcome.
const calls = []
function instrument(xapi) {
  const call = xapi._call
  xapi._call = function (method, args, timeout) {
    const entry = {
      method,
      // never keep the password
      args: method === 'session.login_with_password' ? (args ?? []).map((_, i) => `<param ${i}>`) : args,
      start: performance.now(),
      end: undefined,
      result: undefined,
      error: undefined,
    }
    calls.push(entry)
    const promise = call.call(this, method, args, timeout)
    promise.then(
      result => {
        entry.end = performance.now()
        entry.result = result
      },
      error => {
        entry.end = performance.now()
        entry.error = error
      }
    )
    return promise
  }
}
const callsOf = method => calls.filter(c => c.method === method)

// Resolves with performance.now() at the first time `pred()` holds, checked
// now and after every batch of cache changes (the collection's 'finish'
// event, emitted once the library has applied a batch of events); with
// undefined after `ms`.
function whenCache(xapi, pred, ms) {
  return new Promise(resolve => {
    if (pred()) {
      resolve(performance.now())
      return
    }
    const onFinish = () => {
      if (pred()) done(performance.now())
    }
    const t = setTimeout(() => done(undefined), ms)
    function done(at) {
      clearTimeout(t)
      xapi.objects.removeListener('finish', onFinish)
      resolve(at)
    }
    xapi.objects.on('finish', onFinish)
  })
}

// run py_set_label.py; resolves with { code, exitAt, setAt, stdout, stderr }
// (setAt: when its "set" line arrived, i.e. just after VM.set_name_label returned)
function pySetLabel(ref, label) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [PY_SET_LABEL, url, user, password, ref, label], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let setAt
    child.stdout.on('data', d => {
      stdout += d
      if (setAt === undefined && stdout.includes('set')) setAt = performance.now()
    })
    child.stderr.on('data', d => (stderr += d))
    child.on('error', reject)
    child.on('exit', code => {
      const exitAt = performance.now()
      // let the pipes drain
      child.on('close', () => resolve({ code, exitAt, setAt, stdout, stderr }))
    })
  })
}

// ---------------------------------------------------------------------------

const opts = {
  url,
  auth: { user, password },
  allowUnauthorized: true,
  transport: transportArg,
  // watchEvents left to its default: on, every class from system.listMethods
  // keep single calls well inside the overall timeout (event.from sets its own)
  callTimeout: 20e3,
}

const st = {}
let xapi

async function main() {
  await check(
    'createClient (watchEvents on)',
    () => {
      xapi = createClient(opts)
      // the constructor already started the event loop, which waits for connect()
      instrument(xapi)
      xapi.on('eventFetchingError', error => {
        eventFetchingErrors.push(describeError(error))
        console.log(`warn eventFetchingError: ${describeError(error)}`)
      })
      xapi.on('eventFetchingSuccess', () => ++eventFetchingSuccesses)
      expectEq(xapi.status, 'disconnected', 'status before connect')
      expect(typeof xapi.objectsFetched?.then === 'function', 'xapi.objectsFetched is a promise')
      // track every task record the cache holds, to follow callAsync's tasks
      st.tasksSeen = new Map()
      const onTasks = items => {
        for (const obj of Object.values(items)) {
          if (obj?.$type === 'task') st.tasksSeen.set(obj.$ref, obj)
        }
      }
      xapi.objects.on('add', onTasks)
      xapi.objects.on('update', onTasks)
    },
    { fatal: true }
  )

  await check(
    'connect(): login (2 params), pool.get_all_records, system.listMethods',
    async () => {
      await xapi.connect()
      expectEq(xapi.status, 'connected', 'status after connect')
      const logins = callsOf('session.login_with_password')
      expectEq(logins.length, 1, 'number of session.login_with_password calls')
      expectEq(logins[0].args.length, 2, 'number of login params')
      expect(isRef(xapi.sessionId), `sessionId ${show(xapi.sessionId)}`)
      expect(callsOf('pool.get_all_records').length >= 1, 'pool.get_all_records not called')
      expect(callsOf('system.listMethods').length === 1, 'system.listMethods not called once')
      expect(isRef(xapi.pool?.$ref), `xapi.pool.$ref ${show(xapi.pool?.$ref)}`)
      expect(Array.isArray(xapi._types) && xapi._types.length > 0, `xapi._types ${show(xapi._types)}`)
      for (const t of ['VM', 'host', 'pool', 'task']) {
        expect(xapi._types.includes(t), `class ${t} not discovered from system.listMethods`)
      }
      return `session ${xapi.sessionId}, ${xapi._types.length} classes`
    },
    { fatal: true }
  )

  await check('objectsFetched: event.inject(pool) then get_all_records of every class', async () => {
    const t0 = performance.now()
    await withTimeout(xapi.objectsFetched, 20e3, 'await xapi.objectsFetched')
    const took = performance.now() - t0
    expectEq(callsOf('event.register').length, 0, 'legacy event.register calls (event.inject should have worked)')
    const injects = callsOf('event.inject')
    expect(injects.length >= 1, 'event.inject was not called')
    const inject = injects[0]
    expectEq(inject.args.slice(1), ['pool', xapi.pool.$ref], 'event.inject params after the session')
    expect(inject.error === undefined, `event.inject failed: ${describeError(inject.error)}`)
    expect(
      typeof inject.result === 'string' && inject.result !== '',
      `event.inject should give a token string, got ${show(inject.result)}`
    )
    // the initial fetch: after event.inject, before the first event.from
    const iInject = calls.indexOf(inject)
    let iFrom = calls.findIndex(c => c.method === 'event.from')
    if (iFrom === -1) iFrom = calls.length
    const fetched = new Set(
      calls
        .slice(iInject + 1, iFrom)
        .filter(c => c.method.endsWith('.get_all_records'))
        .map(c => c.method)
    )
    const missing = xapi._types.filter(t => !fetched.has(`${t}.get_all_records`))
    expectEq(missing, [], 'classes not fetched with get_all_records between event.inject and event.from')
    const failedFetches = calls.filter(c => c.method.endsWith('.get_all_records') && c.error !== undefined)
    expectEq(
      failedFetches.map(c => `${c.method}: ${describeError(c.error)}`),
      [],
      'failed get_all_records'
    )
    expectEq(warnings, [], 'library warnings')
    return `${fetched.size} get_all_records, ${xapi.objects.size} objects cached in ${fmtMs(took)}; token ${inject.result}`
  })

  await check('cache (xapi.objects.all) holds the pool and the control domain', () => {
    const all = Object.values(xapi.objects.all)
    const pools = all.filter(o => o.$type === 'pool')
    expectEq(pools.length, 1, 'pools in the cache')
    expectEq(pools[0].$ref, xapi.pool.$ref, 'cached pool ref')
    const doms0 = all.filter(o => o.$type === 'VM' && o.is_control_domain === true)
    expectEq(doms0.length, 1, 'VMs with is_control_domain === true in the cache')
    st.dom0 = doms0[0]
    expectEq(st.dom0.$id, st.dom0.uuid, 'dom0 $id')
    expect(isRef(xapi.pool.master), `pool.master ${show(xapi.pool.master)}`)
    expect(xapi.getObjectByRef(xapi.pool.master, undefined)?.$type === 'host', 'pool master host not cached')
    return `${all.length} objects, dom0 ${st.dom0.$ref} ${show(st.dom0.name_label)}`
  })

  await check('event.from loop runs: eventFetchingSuccess, no eventFetchingError, no warning', async () => {
    // the first event.from answers at once (event.inject made an event); once
    // processed, the loop waits `debounce` (200 ms) and calls again
    const t0 = performance.now()
    while (performance.now() - t0 < 3e3 && (eventFetchingSuccesses < 1 || callsOf('event.from').length < 2)) {
      await sleep(20)
    }
    const froms = callsOf('event.from')
    expect(eventFetchingSuccesses >= 1, `no eventFetchingSuccess after 3 s (${froms.length} event.from calls)`)
    expect(
      froms.length >= 2,
      `the loop did not call event.from again after its first answer (${show(froms[0]?.result)}` +
        `${froms[0]?.error ? ', error ' + describeError(froms[0].error) : ''}): it died processing it`
    )
    const [sid, classes, token, timeout] = froms[0].args
    expectEq(sid, xapi.sessionId, 'event.from session')
    expectEq(classes, xapi._types, 'event.from classes')
    expectEq(token, callsOf('event.inject')[0].result, 'first event.from token (the one event.inject gave)')
    expectEq(timeout, 60.1, 'event.from timeout')
    const r = froms[0].result
    expect(isPlainObject(r), `event.from result should be a struct, got ${show(r)}`)
    expect(Array.isArray(r.events), `event.from events ${show(r.events)}`)
    expect(typeof r.token === 'string' && r.token !== token, `event.from token ${show(r.token)}`)
    expect(isPlainObject(r.valid_ref_counts), `event.from valid_ref_counts ${show(r.valid_ref_counts)}`)
    expect(
      r.events.some(e => e.class === 'pool' && e.ref === xapi.pool.$ref),
      `first event.from should carry the pool event that event.inject made; events ${show(r.events)}`
    )
    expectEq(eventFetchingErrors, [], 'eventFetchingError events')
    expectEq(xapi.watchEventsError, undefined, 'xapi.watchEventsError')
    expectEq(warnings, [], 'library warnings')
    return `${froms.length} event.from calls, first answered in ${fmtMs(froms[0].end - froms[0].start)} with ${r.events.length} event(s)`
  })

  await check(`Python SDK VM.set_name_label(dom0) seen in XO's cache within ${EVENT_LATENCY_LIMIT_MS} ms`, async () => {
    expect(st.dom0 !== undefined, 'no dom0 in the cache')
    const ref = st.dom0.$ref
    st.dom0Label = xapi.getObjectByRef(ref).name_label
    const label = `xo-events py ${Date.now()} <&> é`
    const seen = whenCache(xapi, () => xapi.getObjectByRef(ref, undefined)?.name_label === label, 20e3)
    const child = await pySetLabel(ref, label)
    expect(
      child.code === 0 && child.stdout.includes('set'),
      `py_set_label.py exited ${child.code}: ${show(child.stdout.trim())} ${show(child.stderr.trim())}`
    )
    st.dom0LabelChanged = true
    const seenAt = await Promise.race([seen, sleep(EVENT_LATENCY_LIMIT_MS).then(() => undefined)])
    if (seenAt === undefined) {
      // how late is it, if at all?
      const late = await Promise.race([seen, sleep(3e3).then(() => undefined)])
      throw new CheckFailed(
        `cached dom0 name_label still ${show(xapi.getObjectByRef(ref, undefined)?.name_label)} ` +
          `${EVENT_LATENCY_LIMIT_MS} ms after the Python call returned` +
          (late === undefined ? ' (nor 3 s later)' : ` (seen after ${fmtMs(late - child.exitAt)})`)
      )
    }
    // Python logs out and shuts down after the call, and the change reaches
    // the pending event.from as it commits: it is usually in the cache before
    // the Python process has exited, even before its "set" line arrives
    const latency = seenAt - child.exitAt
    const fromSet = seenAt - child.setAt
    console.log(
      `info Python-made change in XO's cache ${rel(latency, 'the Python process exited')}, ` +
        `${rel(fromSet, 'its "set" line (VM.set_name_label returned) arrived')}`
    )
    return `${rel(latency, 'the Python exit')}, ${rel(fromSet, 'the call returned')}`
  })

  await check('restore dom0 name_label (server, then the cache)', async () => {
    expect(st.dom0LabelChanged, 'label was not changed')
    const ref = st.dom0.$ref
    const seen = whenCache(xapi, () => xapi.getObjectByRef(ref, undefined)?.name_label === st.dom0Label, 3e3)
    await xapi.setField('VM', ref, 'name_label', st.dom0Label)
    const t0 = performance.now()
    delete st.dom0LabelChanged
    expectEq(await xapi.getField('VM', ref, 'name_label'), st.dom0Label, 'name_label on the server')
    const at = await seen
    expect(at !== undefined, `cache still shows ${show(xapi.getObjectByRef(ref, undefined)?.name_label)} after 3 s`)
    return rel(at - t0, 'VM.set_name_label returned')
  })

  await check('VM.create (partial record) appears in the cache', async () => {
    const t0 = performance.now()
    const ref = await xapi.call('VM.create', { name_label: TMP_VM_LABEL })
    const t1 = performance.now()
    expect(isRef(ref), `VM.create should give a ref, got ${show(ref)}`)
    st.tmpVm = ref
    const at = await whenCache(xapi, () => xapi.getObjectByRef(ref, undefined) !== undefined, 3e3)
    expect(at !== undefined, `VM ${ref} not in the cache 3 s after VM.create returned`)
    const vm = xapi.getObjectByRef(ref)
    expectEq([vm.$type, vm.name_label, vm.is_control_domain], ['VM', TMP_VM_LABEL, false], 'cached VM')
    st.tmpVmUuid = vm.$id
    return `${ref}, create took ${fmtMs(t1 - t0)}, cached ${fmtMs(Math.max(0, at - t1))} after`
  })

  await check(`VM.destroy: the cache drops the VM within ${EVENT_LATENCY_LIMIT_MS} ms ('remove' event)`, async () => {
    expect(st.tmpVm !== undefined, 'no VM created')
    const ref = st.tmpVm
    const uuid = st.tmpVmUuid ?? (await xapi.call('VM.get_uuid', ref))
    let removedAt
    const onRemove = items => {
      if (uuid in items && removedAt === undefined) removedAt = performance.now()
    }
    xapi.objects.on('remove', onRemove)
    try {
      const gone = whenCache(xapi, () => xapi.getObjectByRef(ref, undefined) === undefined, 20e3)
      await xapi.call('VM.destroy', ref)
      const t1 = performance.now()
      delete st.tmpVm
      const at = await Promise.race([gone, sleep(EVENT_LATENCY_LIMIT_MS).then(() => undefined)])
      if (at === undefined) {
        const late = await Promise.race([gone, sleep(3e3).then(() => undefined)])
        throw new CheckFailed(
          `VM ${ref} still cached ${EVENT_LATENCY_LIMIT_MS} ms after VM.destroy returned` +
            (late === undefined ? ' (and 3 s later)' : ` (dropped after ${fmtMs(late - t1)})`)
        )
      }
      expect(removedAt !== undefined, `no 'remove' event for ${uuid} on xapi.objects`)
      expect(xapi.getObjectByUuid(uuid, undefined) === undefined, 'still found by uuid')
      return `dropped ${fmtMs(Math.max(0, at - t1))} after VM.destroy returned`
    } finally {
      xapi.objects.removeListener('remove', onRemove)
    }
  })

  await check('callAsync(host.get_servertime, master) resolves to a Date', async () => {
    const hostRef = xapi.pool.master
    const before = Date.now()
    const t0 = performance.now()
    const value = await withTimeout(xapi.callAsync('host.get_servertime', hostRef), 5e3, 'callAsync')
    const took = performance.now() - t0
    const asyncCalls = callsOf('Async.host.get_servertime')
    expectEq(asyncCalls.length, 1, 'Async.host.get_servertime calls')
    const taskRef = asyncCalls[0].result
    expect(isRef(taskRef), `Async.host.get_servertime should answer a task ref, got ${show(taskRef)}`)
    st.servertimeTask = taskRef
    const task = st.tasksSeen.get(taskRef)
    const raw = task?.result
    expect(
      value instanceof Date && !Number.isNaN(+value),
      `expected a valid Date, got ${value?.constructor?.name} ${show(value)} (task result ${show(raw)})`
    )
    // same machine: the server clock is ours; XAPI's datetimes have 1 s resolution
    const skew = +value - before
    expect(Math.abs(skew) < 60e3, `server time ${value.toISOString()} is ${skew} ms away from the local clock`)
    expect(task !== undefined, `task ${taskRef} never appeared in the cache (the library waited on events)`)
    expectEq(task.status, 'success', 'cached task status')
    expect(
      typeof raw === 'string' && /^<value><dateTime\.iso8601>[^<]+<\/dateTime\.iso8601><\/value>$/.test(raw),
      `task result should be <value><dateTime.iso8601>…</dateTime.iso8601></value>, got ${show(raw)}`
    )
    return `${value.toISOString()} in ${fmtMs(took)}; task result ${raw}`
  })

  await check('callAsync: the library destroyed the task (gone from the cache and the server)', async () => {
    const taskRef = st.servertimeTask
    expect(taskRef !== undefined, 'no task')
    const at = await whenCache(xapi, () => xapi.getObjectByRef(taskRef, undefined) === undefined, 2e3)
    const destroys = callsOf('task.destroy').filter(c => c.args[1] === taskRef)
    expectEq(destroys.length, 1, `task.destroy(${taskRef}) calls by the library`)
    expect(destroys[0].error === undefined, `task.destroy failed: ${describeError(destroys[0].error)}`)
    expect(at !== undefined, `task ${taskRef} still in the cache 2 s after the library destroyed it`)
    let err
    try {
      await xapi.call('task.get_record', taskRef)
    } catch (error) {
      err = error
    }
    expect(err instanceof XapiError, `task.get_record of the destroyed task: ${err ? describeError(err) : 'success'}`)
    expectEq([err.code, ...err.params], ['HANDLE_INVALID', 'task', taskRef], 'task.get_record error')
  })

  await check('callAsync(pool.enable_ha, [], {}) rejects with XapiError NOT_IMPLEMENTED', async () => {
    let value, error
    try {
      value = await withTimeout(xapi.callAsync('pool.enable_ha', [], {}), 5e3, 'callAsync')
    } catch (e) {
      error = e
    }
    expect(error !== undefined, `expected a rejection, got ${show(value)}`)
    expect(
      error instanceof XapiError,
      `expected an XapiError, got ${describeError(error)}`
    )
    expectEq(error.code, 'NOT_IMPLEMENTED', 'code')
    const asyncCall = callsOf('Async.pool.enable_ha')[0]
    const viaTask = isRef(asyncCall?.result)
    if (viaTask) {
      const taskRef = asyncCall.result
      expectEq(error.task?.$ref, taskRef, 'error.task (set when the task failed)')
      expectEq(error.task.status, 'failure', 'task status')
      const at = await whenCache(xapi, () => xapi.getObjectByRef(taskRef, undefined) === undefined, 2e3)
      expect(at !== undefined, `failed task ${taskRef} still cached 2 s after`)
    }
    return `${describeError(error)}, ${viaTask ? 'through the task (failure)' : 'answered by the Async call itself'}`
  })

  await check('barrier() resolves (pool.add_to_other_config xo:barrier:… seen through events)', async () => {
    const t0 = performance.now()
    await withTimeout(xapi.barrier(), 5e3, 'barrier()')
    const took = performance.now() - t0
    const adds = callsOf('pool.add_to_other_config').filter(c => String(c.args[2]).startsWith(BARRIER_PREFIX))
    expectEq(adds.length, 1, 'barrier pool.add_to_other_config calls')
    st.barrierKey = adds[0].args[2]
    const dom0 = st.dom0 && (await withTimeout(xapi.barrier(st.dom0.$ref), 5e3, 'barrier(dom0 ref)'))
    expect(st.dom0 === undefined || dom0?.$ref === st.dom0.$ref, `barrier(dom0 ref) gave ${show(dom0?.$ref)}`)
    return `${st.barrierKey} in ${fmtMs(took)}`
  })

  await check('barrier keys removed from pool.other_config afterwards', async () => {
    const keys = callsOf('pool.add_to_other_config')
      .map(c => c.args[2])
      .filter(k => String(k).startsWith(BARRIER_PREFIX))
    expect(keys.length > 0, 'no barrier key')
    const at = await whenCache(xapi, () => keys.every(k => !(k in xapi.pool.other_config)), 2e3)
    expect(at !== undefined, `still in the cached pool.other_config after 2 s: ${show(xapi.pool.other_config)}`)
    const oc = await xapi.getField('pool', xapi.pool.$ref, 'other_config')
    expectEq(Object.keys(oc).filter(k => keys.includes(k)), [], 'barrier keys on the server')
    return `${keys.length} key(s)`
  })

  await check('whole run: no eventFetchingError, no library warning, no unhandled rejection', async () => {
    expectEq(eventFetchingErrors, [], 'eventFetchingError events')
    expectEq(xapi.watchEventsError, undefined, 'xapi.watchEventsError')
    expectEq(warnings, [], 'library warnings')
    expectEq(unhandled, [], 'unhandled rejections')
    const froms = callsOf('event.from')
    const taskRefetches = callsOf('task.get_all_records').length - 1
    return `${froms.length} event.from calls, ${eventFetchingSuccesses} eventFetchingSuccess, ${taskRefetches} task refetch(es) (valid_ref_counts.task mismatch)`
  })

  await restore()

  await check('disconnect()', async () => {
    const sid = xapi.sessionId
    await xapi.disconnect()
    expectEq(xapi.status, 'disconnected', 'status after disconnect')
    // disconnect() fires session.logout without waiting for it
    let err
    for (let i = 0; i < 20; i++) {
      try {
        await xapi._call('VM.get_all', [sid])
      } catch (error) {
        err = error
        break
      }
      await sleep(100)
    }
    expect(err instanceof XapiError, `old session still works 2 s after disconnect (${err?.message ?? 'no error'})`)
    expectEq([err.code, ...err.params], ['SESSION_INVALID', sid], 'error with the old session')
    // informative only: the loop may or may not have had an event.from out
    const pending = callsOf('event.from').filter(c => c.end === undefined)
    const last = callsOf('event.from').at(-1)
    return pending.length !== 0
      ? `${pending.length} event.from still pending 0-2 s after logout`
      : `no event.from pending; the last one ${last?.error ? `failed: ${describeError(last.error)}` : 'answered'}`
  })
}

// Undo what a failed check left behind: dom0's label, the temporary VM,
// barrier keys, tasks of our Async calls the library did not destroy (it
// destroys them only once they settled and it saw that through events).
async function restore() {
  if (xapi === undefined || xapi.status !== 'connected') return
  const steps = [
    async () => {
      if (st.dom0LabelChanged) await xapi.setField('VM', st.dom0.$ref, 'name_label', st.dom0Label)
      delete st.dom0LabelChanged
    },
    async () => {
      if (st.tmpVm !== undefined) await xapi.call('VM.destroy', st.tmpVm)
      delete st.tmpVm
    },
    async () => {
      const oc = await xapi.getField('pool', xapi.pool.$ref, 'other_config')
      const ours = new Set(callsOf('pool.add_to_other_config').map(c => c.args[2]))
      for (const key of Object.keys(oc)) {
        if (ours.has(key)) await xapi.call('pool.remove_from_other_config', xapi.pool.$ref, key)
      }
    },
    async () => {
      const tasks = new Set(await xapi.call('task.get_all'))
      for (const c of calls) {
        if (c.method.startsWith('Async.') && tasks.has(c.result)) await xapi.call('task.destroy', c.result)
      }
    },
  ]
  for (const step of steps) {
    try {
      await step()
    } catch (error) {
      console.log(`warn restore: ${describeError(error)}`)
    }
  }
}

async function cleanup() {
  await restore()
  try {
    await xapi?.disconnect()
  } catch {}
}

await run(main, cleanup)
