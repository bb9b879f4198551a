// Open the Uppy page in headless Debian Chromium (playwright-core, no downloaded browser)
// and wait for Uppy's `complete` event.
//
//   node uppy_run.mjs <page-url> [timeout-ms]
//
// Prints ONE JSON line: the page's window.__uppyResult plus the page's console errors and
// failed requests; exits 1 when the page reports an error, times out or Uppy had failures.
import { openBrowser } from './browser.mjs'

const [pageUrl, timeoutArg] = process.argv.slice(2)
if (!pageUrl) {
  console.error('usage: node uppy_run.mjs <page-url> [timeout-ms]')
  process.exit(2)
}
const timeout = Number(timeoutArg || 60000)
const consoleErrors = []
const failedRequests = []
let browser
let output
try {
  browser = await openBrowser()
  const page = browser.page
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(msg.text())
  })
  page.on('pageerror', (err) => consoleErrors.push(String(err)))
  page.on('requestfailed', (req) =>
    failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`),
  )
  await page.goto(pageUrl, { timeout })
  await page.waitForFunction(() => window.__uppyResult || window.__uppyError, null, { timeout })
  const { result, error } = await page.evaluate(() => ({
    result: window.__uppyResult ?? null,
    error: window.__uppyError ?? null,
  }))
  output = { ...(result ?? {}), error, consoleErrors, failedRequests }
  if (error || !result || result.failed.length > 0) process.exitCode = 1
} catch (err) {
  output = { error: String(err), consoleErrors, failedRequests }
  process.exitCode = 1
} finally {
  await browser?.close()
}
console.log(JSON.stringify(output))
