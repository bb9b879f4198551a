// Browser entry (bundled by esbuild at test time, never committed): Uppy + @uppy/tus upload
// files fetched from the page's own origin to a tus endpoint on another origin.
//
// Query: endpoint, token, files (comma-separated paths on the page's origin), parallel
// (those of `files` that go with parallelUploads: 3), retry (retryDelays in ms, comma-separated;
// Uppy retries a 429 by pausing its whole queue for the next delay). The outcome of Uppy's `complete`
// event lands on window.__uppyResult, a setup error on window.__uppyError.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'

const query = new URLSearchParams(window.location.search)
const endpoint = query.get('endpoint')
const token = query.get('token')
const files = (query.get('files') || '').split(',').filter(Boolean)
const parallel = new Set((query.get('parallel') || '').split(',').filter(Boolean))
const retry = (query.get('retry') || '0,200,1000').split(',').map(Number)

// Per file: the requests tus-js-client sent, as [method, Upload-Concat or null], and the
// statuses of its answers.
const requests = {}
const statuses = {}

async function main() {
  const uppy = new Uppy({ autoProceed: false })
  uppy.use(Tus, {
    endpoint,
    headers: { Authorization: `Bearer ${token}` },
    chunkSize: 512 * 1024,
    retryDelays: retry,
    onBeforeRequest(req, file) {
      const name = file.name
      if (!requests[name]) requests[name] = []
      requests[name].push([req.getMethod(), req.getHeader('Upload-Concat') ?? null])
    },
    onAfterResponse(req, res) {
      statuses[req.getMethod()] = [...(statuses[req.getMethod()] ?? []), res.getStatus()]
    },
  })
  for (const path of files) {
    const response = await fetch(path)
    if (!response.ok) throw new Error(`GET ${path}: ${response.status}`)
    const blob = await response.blob()
    const name = path.split('/').pop()
    const id = uppy.addFile({ name, type: 'application/octet-stream', data: blob, source: 'test' })
    if (parallel.has(path)) {
      // @uppy/tus merges `file.tus` over the plugin options for that file only; a parallel
      // upload must not be chunked by the plugin-wide chunkSize either.
      uppy.setFileState(id, { tus: { parallelUploads: 3, chunkSize: Infinity } })
    }
  }
  uppy.on('complete', (result) => {
    window.__uppyResult = {
      successful: result.successful.map((f) => ({
        name: f.name,
        size: f.size,
        uploadURL: f.uploadURL ?? f.response?.uploadURL ?? null,
      })),
      failed: result.failed.map((f) => ({ name: f.name, error: String(f.error) })),
      requests,
      statuses,
    }
  })
  await uppy.upload()
}

main().catch((err) => {
  window.__uppyError = String(err && err.stack ? err.stack : err)
})
