// Peer launcher: @tus/server with @tus/file-store on Node's http.createServer.
//
//     node benchmarks/peers/tus_node_server.mjs --port P --dir D --max-size BYTES \
//         --modules benchmarks/.peers/node
//
// Serves tus at /files/ on 127.0.0.1:P with `new Server({path: '/files', datastore:
// new FileStore({directory: D}), maxSize})`, its defaults otherwise (no auth hooks, in-memory
// locker); the file store keeps the bytes in D/<id> and the state in D/<id>.json. The packages
// are loaded from the npm folder given by --modules (the benchmark installs them there on first
// use; an ES module cannot find them by NODE_PATH). GET /health/ready answers 200 before the
// request reaches tus, for the benchmark's readiness poll.
import http from 'node:http'
import {createRequire} from 'node:module'
import path from 'node:path'
import {parseArgs} from 'node:util'
import {pathToFileURL} from 'node:url'

const {values} = parseArgs({
  options: {
    port: {type: 'string'},
    dir: {type: 'string'},
    'max-size': {type: 'string'},
    modules: {type: 'string'},
  },
})
for (const name of ['port', 'dir', 'max-size', 'modules']) {
  if (!values[name]) {
    console.error(`tus_node_server.mjs: --${name} is required`)
    process.exit(2)
  }
}

const require = createRequire(path.join(path.resolve(values.modules), 'package.json'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const {Server} = await load('@tus/server')
const {FileStore} = await load('@tus/file-store')

const tus = new Server({
  path: '/files',
  datastore: new FileStore({directory: values.dir}),
  maxSize: Number(values['max-size']),
})

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health/ready') {
    res.writeHead(200, {'Content-Type': 'application/json'})
    res.end('{"status":"ok"}')
    return
  }
  tus.handle(req, res)
})
server.listen(Number(values.port), '127.0.0.1')
