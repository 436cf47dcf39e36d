// Stand-in for the `@talonic/node` SDK, used only by tests/compat/run_mcp.sh.
//
// Why it exists: the Talonic MCP server (../../../../shared/clients/talonic-mcp) depends on
// `@talonic/node@^0.1.24`, which the npm registry reachable from this workplace does not serve
// (`npm view @talonic/node` → 404), so its `npm ci` cannot complete. run_mcp.sh first tries
// the real package; only when that fails does it install this file in its place, and the check
// says so in its output.
//
// What it does: exactly the HTTP requests the published SDK makes for the methods the MCP
// server calls (method, path, query, body encoding, headers), the SDK's unwrapping of the
// response, its `rateLimit`/`cost` decoration on extract and balance results, its error
// mapping (flat `{ code, message, retryable, request_id }` envelope or nested `{ error: {...} }`),
// and its retry policy (429/5xx/network/timeout, up to 3 retries). Written from the SDK's
// documented behaviour; it is test scaffolding, not a client to ship.

const VERSION = "0.1.24-quire-shim"
const DEFAULT_BASE_URL = "https://api.talonic.com"

// ---------------------------------------------------------------- errors

export class TalonicError extends Error {
  constructor({ code, message, status, retryable, requestId }) {
    super(message)
    this.name = "TalonicError"
    this.code = code
    this.status = status
    this.retryable = retryable
    this.requestId = requestId
  }
}
export class TalonicAuthError extends TalonicError {
  constructor(init) {
    super(init)
    this.name = "TalonicAuthError"
  }
}
export class TalonicNotFoundError extends TalonicError {
  constructor(init) {
    super(init)
    this.name = "TalonicNotFoundError"
  }
}
export class TalonicValidationError extends TalonicError {
  constructor(init) {
    super(init)
    this.name = "TalonicValidationError"
  }
}
export class TalonicRateLimitError extends TalonicError {
  constructor(init) {
    super(init)
    this.name = "TalonicRateLimitError"
    this.rateLimit = init.rateLimit
  }
}
export class TalonicServerError extends TalonicError {
  constructor(init) {
    super(init)
    this.name = "TalonicServerError"
  }
}
export class TalonicNetworkError extends TalonicError {
  constructor({ message, cause }) {
    super({ code: "network_error", message, status: 0, retryable: true })
    this.name = "TalonicNetworkError"
    if (cause !== undefined) this.cause = cause
  }
}
export class TalonicTimeoutError extends TalonicError {
  constructor({ message, timeoutMs }) {
    super({ code: "timeout", message, status: 0, retryable: true })
    this.name = "TalonicTimeoutError"
    this.timeoutMs = timeoutMs
  }
}

const STATUS_CODES = {
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  413: "file_too_large",
  422: "unprocessable",
  429: "rate_limited",
  503: "service_unavailable",
}

function envelope(body) {
  if (!body || typeof body !== "object") return undefined
  const pick = (o) =>
    typeof o.code === "string" && typeof o.message === "string"
      ? {
          code: o.code,
          message: o.message,
          retryable: typeof o.retryable === "boolean" ? o.retryable : undefined,
          requestId:
            typeof o.request_id === "string"
              ? o.request_id
              : typeof o.requestId === "string"
                ? o.requestId
                : undefined,
        }
      : undefined
  return pick(body) ?? (body.error && typeof body.error === "object" ? pick(body.error) : undefined)
}

function errorFor(status, body, rateLimit, headerRequestId) {
  const e = envelope(body)
  const init = {
    code: e?.code ?? STATUS_CODES[status] ?? (status >= 500 ? "internal_error" : "bad_request"),
    message: e?.message ?? `HTTP ${status}`,
    status,
    retryable: e?.retryable ?? (status === 429 || status >= 500),
    requestId: e?.requestId ?? headerRequestId,
  }
  if (status === 401 || status === 403) return new TalonicAuthError(init)
  if (status === 404) return new TalonicNotFoundError(init)
  if ([400, 409, 413, 422].includes(status)) return new TalonicValidationError(init)
  if (status === 429)
    return new TalonicRateLimitError({
      ...init,
      rateLimit: rateLimit ?? { limit: 0, remaining: 0, resetAt: new Date(0) },
    })
  if ([500, 502, 503, 504].includes(status)) return new TalonicServerError(init)
  return new TalonicError(init)
}

function localError(code, message) {
  return new TalonicError({ code, message, status: 0, retryable: false })
}

// ---------------------------------------------------------------- transport

function intHeader(h, name) {
  const v = h.get(name)
  if (v === null) return undefined
  const n = Number.parseInt(v, 10)
  return Number.isFinite(n) ? n : undefined
}

function numHeader(h, name) {
  const v = h.get(name)
  if (v === null) return undefined
  const n = Number(v)
  return Number.isFinite(n) ? n : undefined
}

// `null` when the response carries no X-RateLimit-* header at all.
function parseRateLimit(h) {
  if (!["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"].some((k) => h.has(k)))
    return null
  return {
    limit: intHeader(h, "x-ratelimit-limit") ?? 0,
    remaining: intHeader(h, "x-ratelimit-remaining") ?? 0,
    resetAt: new Date((intHeader(h, "x-ratelimit-reset") ?? 0) * 1000),
  }
}

// `null` unless X-Talonic-Cost-Credits is present; otherwise the five fields, a missing or
// unparsable header left undefined (which the MCP's outputSchema for `cost` rejects: send all
// five or none).
function parseCost(h) {
  const costCredits = numHeader(h, "x-talonic-cost-credits")
  if (costCredits === undefined) return null
  return {
    costCredits,
    costEur: numHeader(h, "x-talonic-cost-eur"),
    balanceCredits: numHeader(h, "x-talonic-balance-credits"),
    cellsResolvedRegistry: numHeader(h, "x-talonic-cells-resolved-registry"),
    cellsResolvedAi: numHeader(h, "x-talonic-cells-resolved-ai"),
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

class Transport {
  #cfg
  constructor(config) {
    if (typeof config?.apiKey !== "string" || config.apiKey.length === 0)
      throw new TypeError("Talonic: apiKey is required")
    const fetchFn = config.fetch ?? globalThis.fetch
    if (typeof fetchFn !== "function") throw new TypeError("Talonic: no fetch implementation")
    this.#cfg = {
      apiKey: config.apiKey,
      baseUrl: (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/$/, ""),
      timeout: config.timeout ?? 60_000,
      maxRetries: config.maxRetries ?? 3,
      fetch: fetchFn,
    }
  }

  async request(opts) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#once(opts)
      } catch (err) {
        const e =
          err instanceof TalonicError
            ? err
            : new TalonicNetworkError({ message: err?.message ?? String(err), cause: err })
        if (!e.retryable || attempt >= this.#cfg.maxRetries) throw e
        let wait = Math.min(1000 * 2 ** attempt, 16_000) + Math.random() * 250
        if (e instanceof TalonicRateLimitError) {
          const until = e.rateLimit.resetAt.getTime() - Date.now()
          if (until > 0 && until < 60_000) wait = until + 100
        }
        await sleep(wait)
      }
    }
  }

  async #once({ method, path, query, body }) {
    const url = new URL(this.#cfg.baseUrl + (path.startsWith("/") ? path : `/${path}`))
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v))
    }
    const headers = {
      authorization: `Bearer ${this.#cfg.apiKey}`,
      "user-agent": `talonic-node/${VERSION}`,
      accept: "application/json",
    }
    let payload
    if (body !== undefined) {
      if (body instanceof FormData) payload = body
      else {
        headers["content-type"] = "application/json"
        payload = typeof body === "string" ? body : JSON.stringify(body)
      }
    }
    const ctl = new AbortController()
    const timer = setTimeout(() => ctl.abort(), this.#cfg.timeout)
    let res
    try {
      res = await this.#cfg.fetch(url.toString(), {
        method,
        headers,
        body: payload,
        signal: ctl.signal,
      })
    } catch (err) {
      if (err?.name === "AbortError")
        throw new TalonicTimeoutError({
          message: `Request timed out after ${this.#cfg.timeout}ms`,
          timeoutMs: this.#cfg.timeout,
        })
      throw new TalonicNetworkError({ message: err?.message ?? String(err), cause: err })
    } finally {
      clearTimeout(timer)
    }
    const rateLimit = parseRateLimit(res.headers)
    const cost = parseCost(res.headers)
    let data
    if ((res.headers.get("content-type") ?? "").includes("application/json")) {
      try {
        data = await res.json()
      } catch {
        data = undefined
      }
    } else {
      const text = await res.text()
      data = text.length > 0 ? text : undefined
    }
    const requestId = res.headers.get("x-request-id") ?? undefined
    if (!res.ok) throw errorFor(res.status, data, rateLimit, requestId)
    return { data, rateLimit, cost, requestId, status: res.status }
  }
}

// `WithRateLimit<T>`: the body plus `rateLimit` and `cost`.
function decorate(result) {
  const d = result.data
  if (d && typeof d === "object" && !Array.isArray(d))
    return { ...d, rateLimit: result.rateLimit, cost: result.cost }
  return d
}

// ---------------------------------------------------------------- extract

const MIME = {
  pdf: "application/pdf",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  tif: "image/tiff",
  tiff: "image/tiff",
  webp: "image/webp",
  bmp: "image/bmp",
  gif: "image/gif",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  doc: "application/msword",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  xls: "application/vnd.ms-excel",
  pptx: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  ppt: "application/vnd.ms-powerpoint",
  txt: "text/plain",
  md: "text/markdown",
  csv: "text/csv",
  tsv: "text/tab-separated-values",
  json: "application/json",
  xml: "application/xml",
  html: "text/html",
  htm: "text/html",
  eml: "message/rfc822",
  zip: "application/zip",
}

function mimeOf(filename) {
  const dot = filename.lastIndexOf(".")
  if (dot < 0 || dot === filename.length - 1) return "application/octet-stream"
  return MIME[filename.slice(dot + 1).toLowerCase()] ?? "application/octet-stream"
}

async function extractForm(params) {
  const sources = ["file", "file_path", "file_url", "document_id"].filter(
    (k) => params[k] !== undefined,
  )
  if (sources.length === 0)
    throw localError(
      "missing_file_source",
      "extract requires a file source: provide one of file, file_path, file_url, or document_id",
    )
  if (sources.length > 1)
    throw localError(
      "multiple_file_sources",
      `extract accepts exactly one file source; received: ${sources.join(", ")}`,
    )
  if (params.schema !== undefined && params.schema_id !== undefined)
    throw localError("multiple_schemas", "extract accepts schema OR schema_id, not both")

  // A JSON Schema with `properties` and no `required` gets every property required.
  let schema = params.schema
  if (
    schema &&
    typeof schema === "object" &&
    schema.properties &&
    typeof schema.properties === "object" &&
    !schema.required
  ) {
    schema = { ...schema, required: Object.keys(schema.properties) }
  }

  const fd = new FormData()
  if (params.file !== undefined) {
    const name = params.filename ?? "file"
    const type = params.content_type ?? (params.file.type || mimeOf(name))
    fd.append("file", new Blob([params.file], { type }), name)
  } else if (params.file_path !== undefined) {
    const { readFile } = await import("node:fs/promises")
    const { basename } = await import("node:path")
    const buf = await readFile(params.file_path)
    const name = basename(params.file_path)
    fd.append(
      "file",
      new Blob([new Uint8Array(buf)], { type: params.content_type ?? mimeOf(name) }),
      name,
    )
  } else if (params.file_url !== undefined) {
    fd.append("file_url", params.file_url)
  } else {
    fd.append("document_id", params.document_id)
  }
  if (schema !== undefined)
    fd.append("schema", typeof schema === "string" ? schema : JSON.stringify(schema))
  else if (params.schema_id !== undefined) fd.append("schema_id", params.schema_id)
  if (params.instructions !== undefined) fd.append("instructions", params.instructions)
  if (params.include_markdown) fd.append("include_markdown", "true")
  if (params.options !== undefined) fd.append("options", JSON.stringify(params.options))
  return fd
}

// ---------------------------------------------------------------- resources

class Documents {
  #t
  constructor(t) {
    this.#t = t
  }
  async list(params) {
    return (await this.#t.request({ method: "GET", path: "/v1/documents", query: params })).data
  }
  async get(id) {
    return (await this.#t.request({ method: "GET", path: `/v1/documents/${encodeURIComponent(id)}` }))
      .data
  }
  async getMarkdown(id) {
    return (
      await this.#t.request({
        method: "GET",
        path: `/v1/documents/${encodeURIComponent(id)}/markdown`,
      })
    ).data
  }
  async reExtract(id) {
    return (
      await this.#t.request({
        method: "POST",
        path: `/v1/documents/${encodeURIComponent(id)}/re-extract`,
      })
    ).data
  }
  async delete(id) {
    return (
      await this.#t.request({ method: "DELETE", path: `/v1/documents/${encodeURIComponent(id)}` })
    ).data
  }
  async filter(params) {
    const ref = (o, what) => {
      const r = o.fieldId ?? o.field
      if (!r)
        throw localError(
          "missing_field_reference",
          `${what} needs either \`field\` (name) or \`fieldId\`.`,
        )
      return r
    }
    const body = {
      conditions: params.conditions.map((c) => ({
        fieldId: ref(c, "Each filter condition"),
        operator: c.operator,
        ...(c.value !== undefined ? { value: c.value } : {}),
        ...(c.valueTo !== undefined ? { valueTo: c.valueTo } : {}),
      })),
    }
    if (params.search !== undefined) body.search = params.search
    if (params.sort !== undefined)
      body.sort = { fieldId: ref(params.sort, "filter sort"), direction: params.sort.direction }
    if (params.page !== undefined) body.page = params.page
    if (params.limit !== undefined) body.limit = params.limit
    if (params.source_connection_id !== undefined) body.source_id = params.source_connection_id
    return (await this.#t.request({ method: "POST", path: "/v1/documents/filter", body })).data
  }
}

class Schemas {
  #t
  constructor(t) {
    this.#t = t
  }
  async list() {
    return (await this.#t.request({ method: "GET", path: "/v1/schemas" })).data
  }
  async get(id) {
    return (await this.#t.request({ method: "GET", path: `/v1/schemas/${encodeURIComponent(id)}` }))
      .data
  }
  async create(params) {
    return (await this.#t.request({ method: "POST", path: "/v1/schemas", body: params })).data
  }
  async update(id, params) {
    return (
      await this.#t.request({
        method: "PUT",
        path: `/v1/schemas/${encodeURIComponent(id)}`,
        body: params,
      })
    ).data
  }
  async delete(id) {
    return (
      await this.#t.request({ method: "DELETE", path: `/v1/schemas/${encodeURIComponent(id)}` })
    ).data
  }
}

class Credits {
  #t
  constructor(t) {
    this.#t = t
  }
  async getBalance() {
    return decorate(await this.#t.request({ method: "GET", path: "/v1/credits/balance" }))
  }
}

class Usage {
  #t
  constructor(t) {
    this.#t = t
  }
  async getByFunction(days) {
    return (
      await this.#t.request({
        method: "GET",
        path: "/v1/usage",
        query: days != null ? { days: String(days) } : undefined,
      })
    ).data
  }
}

class Pricing {
  #t
  constructor(t) {
    this.#t = t
  }
  async get() {
    return (await this.#t.request({ method: "GET", path: "/v1/pricing" })).data
  }
}

export class Talonic {
  #t
  constructor(config) {
    this.#t = new Transport(config)
    this.documents = new Documents(this.#t)
    this.schemas = new Schemas(this.#t)
    this.credits = new Credits(this.#t)
    this.usage = new Usage(this.#t)
    this.pricing = new Pricing(this.#t)
  }

  async extract(params) {
    const body = await extractForm(params)
    return decorate(await this.#t.request({ method: "POST", path: "/v1/extract", body }))
  }

  async search(query, options = {}) {
    return (
      await this.#t.request({
        method: "GET",
        path: "/v1/search",
        query: { q: query, ...(options.limit !== undefined ? { limit: options.limit } : {}) },
      })
    ).data
  }
}

export { VERSION }
