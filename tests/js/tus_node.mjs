// tus-js-client in Node against a running tusingest, one scenario per run.
//
//   node tus_node.mjs <scenario> <endpoint> <token> <file>
//
// Prints ONE JSON line: {"scenario", "url", "responses": [[method, status], ...], ...}
// and exits 1 (with {"error": ...}) when the upload fails. The Python side checks the
// server's truth (HEAD, staged bytes) itself; see tests/clients/test_tus_js_client.py.
import { createReadStream, statSync } from 'node:fs'
import { PassThrough } from 'node:stream'
import { Upload } from 'tus-js-client'

const KiB = 1024
const CHUNK = 256 * KiB

const [scenario, endpoint, token, file] = process.argv.slice(2)
if (!file) {
  console.error('usage: node tus_node.mjs <scenario> <endpoint> <token> <file>')
  process.exit(2)
}
const size = statSync(file).size

// A Map-backed store with the interface of tus-js-client's urlStorage
// (what FileUrlStorage does on disk, without a lock file).
class MemoryUrlStorage {
  constructor() {
    this.items = new Map()
    this.counter = 0
  }
  async findAllUploads() {
    return [...this.items.entries()].map(([key, value]) => ({ ...value, urlStorageKey: key }))
  }
  async findUploadsByFingerprint(fingerprint) {
    return (await this.findAllUploads()).filter((u) =>
      u.urlStorageKey.startsWith(`tus::${fingerprint}::`),
    )
  }
  async removeUpload(key) {
    this.items.delete(key)
  }
  async addUpload(fingerprint, upload) {
    const key = `tus::${fingerprint}::${++this.counter}`
    this.items.set(key, upload)
    return key
  }
}

// Every response the client saw, for diagnostics and for checks on the methods used.
const responses = []
const requestHeaders = []

function options(extra = {}) {
  return {
    endpoint,
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename: `${scenario}.bin`, filetype: 'application/octet-stream' },
    // Few, fast retries, as a real client has; the tests check the exact request
    // sequence, so a retry does not go unnoticed.
    retryDelays: [0, 200, 1000],
    onBeforeRequest(req) {
      requestHeaders.push({
        method: req.getMethod(),
        override: req.getHeader('X-HTTP-Method-Override') ?? null,
        concat: req.getHeader('Upload-Concat') ?? null,
        defer: req.getHeader('Upload-Defer-Length') ?? null,
        length: req.getHeader('Upload-Length') ?? null,
      })
    },
    onAfterResponse(req, res) {
      responses.push([req.getMethod(), res.getStatus()])
    },
    ...extra,
  }
}

// Run an Upload to success; resolves with it, rejects with the client's error.
function run(source, extra = {}, prepare = async () => {}) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(source, {
      ...options(extra),
      onSuccess: () => resolve(upload),
      onError: reject,
    })
    prepare(upload).then(() => upload.start(), reject)
  })
}

// Start an upload in 256 KiB chunks and abort it (terminate or not) as soon as the server
// acknowledged `threshold` bytes, before the next PATCH. (Node's progress events are
// throttled to one per 100 ms, too coarse to abort reliably mid-request on loopback.)
// Resolves with the upload and the offset the server had acknowledged.
function startThenAbort(source, threshold, terminate, extra = {}) {
  return new Promise((resolve, reject) => {
    let aborted = false
    const upload = new Upload(source, {
      ...options({ chunkSize: CHUNK, ...extra }),
      onChunkComplete(_chunk, accepted) {
        if (aborted || accepted < threshold) return
        aborted = true
        upload.abort(terminate).then(() => resolve({ upload, accepted }), reject)
      },
      onSuccess: () => reject(new Error('upload finished before it could be aborted')),
      onError: reject,
    })
    upload.start()
  })
}

const scenarios = {
  async chunked() {
    const upload = await run(createReadStream(file), { chunkSize: CHUNK })
    return { url: upload.url }
  },

  async resume() {
    const urlStorage = new MemoryUrlStorage()
    const first = await startThenAbort(createReadStream(file), 6 * CHUNK, false, { urlStorage })
    const stored = await urlStorage.findAllUploads()
    let previous = []
    let resumedFrom = null
    const second = await run(
      createReadStream(file),
      {
        chunkSize: CHUNK,
        urlStorage,
        onAfterResponse(req, res) {
          responses.push([req.getMethod(), res.getStatus()])
          if (req.getMethod() === 'HEAD' && resumedFrom === null) {
            resumedFrom = Number(res.getHeader('Upload-Offset'))
          }
        },
      },
      async (upload) => {
        previous = await upload.findPreviousUploads()
        if (previous.length === 0) throw new Error('findPreviousUploads() found nothing')
        upload.resumeFromPreviousUpload(previous[0])
      },
    )
    return {
      url: second.url,
      first_url: first.upload.url,
      aborted_at: first.accepted,
      stored: stored.length,
      previous: previous.length,
      resumed_from: resumedFrom,
    }
  },

  async parallel() {
    const upload = await run(createReadStream(file), { parallelUploads: 3 })
    return { url: upload.url }
  },

  async deferred() {
    // A plain Readable (not an fs.ReadStream): tus-js-client cannot know the size.
    const stream = createReadStream(file, { highWaterMark: 64 * KiB }).pipe(new PassThrough())
    const upload = await run(stream, { chunkSize: CHUNK, uploadLengthDeferred: true })
    return { url: upload.url }
  },

  async abort_terminate() {
    const { upload, accepted } = await startThenAbort(createReadStream(file), 2 * CHUNK, true)
    return { url: upload.url, aborted_at: accepted }
  },

  // A file the server refuses once complete (e.g. a virus): report what onError saw.
  async eicar() {
    return new Promise((resolve) => {
      const upload = new Upload(createReadStream(file), {
        ...options({ chunkSize: CHUNK }),
        onSuccess: () => resolve({ url: upload.url, success: true, error: null }),
        onError(err) {
          const res = err.originalResponse ?? null
          resolve({
            url: upload.url,
            success: false,
            error: {
              message: String(err),
              status: res ? res.getStatus() : null,
              body: res ? res.getBody() : null,
              upload_status: res ? (res.getHeader('X-Upload-Status') ?? null) : null,
            },
          })
        },
      })
      upload.start()
    })
  },

  // Three uploads started at once against a server that allows fewer a minute: the 429s are
  // retried after the server's Retry-After. tus-js-client (4.x) retries only 409, 423 and
  // non-4xx by default, so a 429 needs an onShouldRetry; and it waits retryDelays, not
  // Retry-After, so the delay is set from the answer before the retry.
  async rate_limited() {
    const count = 3
    const retried = []
    const uploads = []
    for (let n = 0; n < count; n++) {
      const delays = [1000, 1000, 1000, 1000, 1000]
      uploads.push(
        run(createReadStream(file), {
          chunkSize: CHUNK,
          retryDelays: delays,
          onShouldRetry(err, attempt, opts) {
            const res = err.originalResponse
            const status = res ? res.getStatus() : 0
            if (status === 429) {
              const after = Number(res.getHeader('Retry-After'))
              retried.push({ upload: n, retry_after: after })
              if (after > 0) delays[attempt] = after * 1000
              return true
            }
            return (status < 400 || status >= 500 || status === 409 || status === 423)
          },
        }),
      )
    }
    const done = await Promise.all(uploads)
    return { urls: done.map((upload) => upload.url), retried }
  },

  async override() {
    const upload = await run(createReadStream(file), {
      chunkSize: CHUNK,
      overridePatchMethod: true,
    })
    return { url: upload.url }
  },
}

if (!(scenario in scenarios)) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(', ')}`)
  process.exit(2)
}
try {
  const result = await scenarios[scenario]()
  console.log(JSON.stringify({ scenario, size, ...result, responses, requests: requestHeaders }))
} catch (err) {
  console.log(JSON.stringify({ scenario, size, error: String(err), responses }))
  process.exitCode = 1
}
