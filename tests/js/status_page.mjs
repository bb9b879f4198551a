// Sign in to tusingest's /status page in headless Debian Chromium (playwright-core), watch an
// upload that the test streams meanwhile, save a screenshot.
//
//   node status_page.mjs <server-url> <admin-token> <upload-id> <screenshot.png> [timeout-ms]
//
// Prints ONE JSON line: the progress values the upload's bar showed (in order), whether the
// page was reloaded meanwhile, the filename cell's text, script elements and dialogs the page
// got, the cookie's flags, console errors; exits 1 on any error.
import { openBrowser } from './browser.mjs'

const [base, token, uploadId, screenshot, timeoutArg] = process.argv.slice(2)
if (!base || !token || !uploadId || !screenshot) {
  console.error('usage: node status_page.mjs <server-url> <admin-token> <upload-id> <png> [ms]')
  process.exit(2)
}
const timeout = Number(timeoutArg || 30000)
const consoleErrors = []
const dialogs = []
let browser
let output
try {
  browser = await openBrowser({ viewport: { width: 1280, height: 900 } })
  const page = browser.page
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()) })
  page.on('pageerror', (err) => consoleErrors.push(String(err)))
  page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss() })

  const signIn = await page.goto(`${base}/status`, { timeout })
  const loginStatus = signIn.status()
  await page.fill('#token', token)
  await Promise.all([page.waitForURL(`${base}/status`, { timeout }), page.click('button[type=submit]')])
  await page.waitForSelector('#node-id:not(:empty)', { timeout })
  consoleErrors.length = 0 // the sign-in form's own 401 is logged as a failed load
  // A marker that a reload would wipe: the page must update in place.
  await page.evaluate(() => { window.__marker = 'kept' })

  const row = `#in-progress tr[data-upload="${uploadId}"]`
  await page.waitForSelector(row, { timeout })
  const progress = []
  const deadline = Date.now() + timeout
  while (Date.now() < deadline) {
    const value = await page.getAttribute(`${row} [role=progressbar]`, 'aria-valuenow').catch(() => null)
    if (value !== null && (progress.length === 0 || Number(value) !== progress[progress.length - 1])) {
      progress.push(Number(value))
    }
    if (progress.length >= 3) break
    await page.waitForTimeout(300)
  }
  const filenameText = await page.textContent(`${row} td.name`)
  const scriptsInTables = await page.evaluate(() => document.querySelectorAll('main script').length)
  await page.screenshot({ path: screenshot, fullPage: true })
  const marker = await page.evaluate(() => window.__marker ?? null)
  const cookies = await browser.context.cookies(base)
  const cookie = cookies.find((c) => c.name === 'tusingest_status') ?? null
  output = {
    loginStatus,
    progress,
    reloaded: marker !== 'kept',
    filenameText,
    scriptsInTables,
    dialogs,
    cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path },
    consoleErrors,
  }
} catch (err) {
  output = { error: String(err), consoleErrors, dialogs }
  process.exitCode = 1
} finally {
  await browser?.close()
}
console.log(JSON.stringify(output))
