package proxy

// favaproxy's own endpoints, at the root of its URL space. They are not
// authenticated (see authn.go) and never forwarded to Fava.
const (
	// PathLivez answers 200 while the process serves (liveness probe).
	PathLivez = "/livez"
	// PathReadyz answers 200 when Fava and every ledger are usable
	// (readiness probe), 503 otherwise.
	PathReadyz = "/readyz"
	// PathHealthz is PathReadyz under its conventional alias.
	PathHealthz = "/healthz"
	// PathMetrics serves Prometheus metrics (404 with metrics.disabled).
	PathMetrics = "/metrics"
)

// ownRoutes are favaproxy's own endpoints: the metrics count them as kind
// "other", not as reads of Fava.
var ownRoutes = map[string]bool{PathLivez: true, PathReadyz: true, PathHealthz: true, PathMetrics: true}
