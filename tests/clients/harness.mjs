// Check harness shared by xo.mjs and xo_events.mjs (the `xen-api` client
// tests): the assertion helpers and the check runner, which prints one line
// per check ("ok   ..." / "FAIL ..."), keeps the passed/failed counts, arms the
// overall timeout and ends with "<tag>: N checks ok, M checks failed" and the
// "RESULT passed=N failed=M" line that run.sh reads.

// Not re-exported by index.mjs; the package has no "exports" map, so a deep
// import gives the very class the transports throw.
import XapiError from 'xen-api/_XapiError.mjs'

// a failed expectation: reported as its message alone
export class CheckFailed extends Error {}
// thrown by a failed fatal check: later checks depend on it
export class Abort extends Error {}

export function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg)
}

export const show = v => {
  const s = JSON.stringify(v)
  return s === undefined ? String(v) : s.length > 300 ? s.slice(0, 300) + '…' : s
}

export function expectEq(got, want, what) {
  if (show(got) !== show(want)) throw new CheckFailed(`${what}: expected ${show(want)}, got ${show(got)}`)
}

export const isPlainObject = v => v !== null && typeof v === 'object' && !Array.isArray(v)

export const describeError = error =>
  error instanceof XapiError
    ? `XapiError ${error.code}(${show(error.params)})`
    : `${error?.constructor?.name ?? 'Error'}: ${error?.message ?? error}`

// Start the counters and the overall timeout (on expiry: one more failure,
// the summary, exit 1). Returns `check` and `run`.
export function startHarness(tag, overallTimeoutMs) {
  let passed = 0
  let failed = 0

  function finish(code) {
    console.log(`${tag}: ${passed} checks ok, ${failed} checks failed`)
    console.log(`RESULT passed=${passed} failed=${failed}`)
    process.exit(code)
  }

  const timer = setTimeout(() => {
    failed++
    console.log(`FAIL overall timeout: not finished after ${overallTimeoutMs / 1e3} s`)
    finish(1)
  }, overallTimeoutMs)

  // Run one check: `fn` passes unless it throws; a string it returns is shown
  // in brackets. A failed `fatal` check throws Abort. Returns fn's value.
  async function check(name, fn, { fatal = false } = {}) {
    let info
    try {
      info = await fn()
    } catch (error) {
      failed++
      let detail
      if (error instanceof CheckFailed) {
        detail = error.message
      } else {
        detail = describeError(error)
        if (!(error instanceof XapiError)) {
          if (error?.code !== undefined) detail += ` [code ${error.code}]`
          if (error?.cause !== undefined) detail += ` (cause: ${error.cause?.message ?? error.cause})`
        }
      }
      console.log(`FAIL ${name}: ${detail}`)
      if (fatal) throw new Abort(name)
      return undefined
    }
    passed++
    console.log(`ok   ${name}${typeof info === 'string' && info !== '' ? `  [${info}]` : ''}`)
    return info
  }

  // Run `main` (an Abort or any other error ends it), then `cleanup`, then
  // print the summary and exit: 0 only if every check passed.
  async function run(main, cleanup) {
    try {
      await main()
    } catch (error) {
      if (error instanceof Abort) {
        console.log(`FAIL aborting: later checks depend on '${error.message}'`)
      } else {
        failed++
        console.log(`FAIL unexpected error: ${error?.stack ?? error}`)
      }
    }
    await cleanup()
    clearTimeout(timer)
    finish(failed === 0 ? 0 : 1)
  }

  return { check, run }
}
