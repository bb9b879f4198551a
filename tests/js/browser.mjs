// Headless Debian Chromium through playwright-core (no downloaded browser), in a fresh
// profile of its own that `close` removes.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

export async function openBrowser(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'tusingest-chromium-'))
  // A persistent context is how playwright takes a fresh --user-data-dir of our own.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30000,
    ...options,
  }).catch((err) => {
    rmSync(profile, { recursive: true, force: true })
    throw err
  })
  const page = context.pages()[0] ?? (await context.newPage())
  const close = async () => {
    await context.close().catch(() => {})
    rmSync(profile, { recursive: true, force: true })
  }
  return { context, page, close }
}
