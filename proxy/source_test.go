package proxy

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/ledger"
)

// TestPutSourceMerge: two clients GET source, change different regions and
// both PUT with the same original checksum; Fava alone would refuse the
// second as changed externally.
func TestPutSourceMerge(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			t.Run("DifferentRegions", func(t *testing.T) {
				e := startEmu(t, style, emuOpts{})
				text, sum := e.getSource(e.main)
				a := strings.Replace(text, `"Bread"`, `"Rye bread"`, 1)
				b := strings.Replace(text, `"Eggs"`, `"Free-range eggs"`, 1)

				resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: a, SHA256: sum})
				e.wantSuccess("first PUT", resp, m)
				if got := resp.Header.Get(ledger.MergedHeader); got != "" {
					t.Fatalf("first PUT: %s=%q, want none", ledger.MergedHeader, got)
				}
				resp, m = e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: b, SHA256: sum})
				e.wantSuccess("second PUT", resp, m)
				if got, want := resp.Header.Get(ledger.MergedHeader), "true"; got != want {
					t.Fatalf("second PUT: %s=%q, want %q", ledger.MergedHeader, got, want)
				}
				file := e.read()
				for _, want := range []string{`"Rye bread"`, `"Free-range eggs"`, `"Milk"`} {
					if !strings.Contains(file, want) {
						t.Fatalf("file lacks %s:\n%s", want, file)
					}
				}
				if got, want := m["data"], checksum.String(file); got != want {
					t.Fatalf("answered checksum %v, want the file's %s", got, want)
				}
			})
			t.Run("Overlapping", func(t *testing.T) {
				e := startEmu(t, style, emuOpts{})
				text, sum := e.getSource(e.main)
				a := strings.Replace(text, `"Milk"`, `"Oat milk"`, 1)
				b := strings.Replace(text, `"Milk"`, `"Soy milk"`, 1)
				resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: a, SHA256: sum})
				e.wantSuccess("first PUT", resp, m)
				resp, m = e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: b, SHA256: sum})
				c := e.wantConflict("second PUT", resp, m, "file")
				file := e.read()
				if got, want := c["current_sha256sum"], checksum.String(file); got != want {
					t.Fatalf("current_sha256sum=%v, want the file's %s", got, want)
				}
				if got, want := c["file_path"], e.main; got != want {
					t.Fatalf("file_path=%v, want %s", got, want)
				}
				if !strings.Contains(file, `"Oat milk"`) || strings.Contains(file, `"Soy milk"`) {
					t.Fatalf("file should hold the first edit only:\n%s", file)
				}
			})
			t.Run("UnknownBase", func(t *testing.T) {
				e := startEmu(t, style, emuOpts{})
				before := e.read()
				resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: "; nothing\n", SHA256: checksum.String("never served")})
				c := e.wantConflict("PUT", resp, m, "file")
				if got, want := c["current_sha256sum"], checksum.String(before); got != want {
					t.Fatalf("current_sha256sum=%v, want %s", got, want)
				}
				if got := e.read(); got != before {
					t.Fatalf("file changed:\n%s", got)
				}
			})
		})
	}
}

// TestPutSourceNotLedgerFile: a file_path outside the ledger is refused
// with 400 before Fava is asked.
func TestPutSourceNotLedgerFile(t *testing.T) {
	e := startEmu(t, emuStyles[1], emuOpts{})
	for _, p := range []string{"/etc/passwd", "relative.beancount", e.main + ".other"} {
		resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: p, Source: "x", SHA256: "00"})
		if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
			t.Fatalf("%s: status %d, want %d (%v)", p, got, want, m)
		}
		if got, want := m["field"], "file_path"; got != want {
			t.Fatalf("%s: field %v, want %s", p, got, want)
		}
	}
}

// TestPutSourceOutsideWriterRetried: a PUT source with the current
// checksum meets a file that an outside writer changes just before Fava
// writes it; favaproxy re-reads after a backoff and merges the client's
// edit into the outside writer's text instead of answering Fava's error.
func TestPutSourceOutsideWriterRetried(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			e, _, sleeps := startOutside(t, style, 1, nil)
			text, sum := e.getSource(e.main)
			before := scrape(t, e.p.URL)
			resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: strings.Replace(text, `"Bread"`, `"Toast"`, 1), SHA256: sum})
			e.wantSuccess("PUT", resp, m)
			after := scrape(t, e.p.URL)
			for res, want := range map[string]float64{"retried": 1, "merged": 1, "answered_409": 0} {
				labels := []string{"ledger=" + testSlug, "kind=file", "resolution=" + res}
				if got := sample(after, "favaproxy_conflicts_total", labels...) - sample(before, "favaproxy_conflicts_total", labels...); got != want {
					t.Errorf("conflicts_total{resolution=%s} moved by %v, want %v", res, got, want)
				}
			}
			file := e.read()
			if !strings.Contains(file, `"Toast"`) || !strings.Contains(file, "; outside 1") {
				t.Fatalf("file should hold both writers' changes:\n%s", file)
			}
			if got, want := len(sleeps.all()), 1; got != want {
				t.Fatalf("%d backoff waits, want %d", got, want)
			}
		})
	}
}

// TestPutSourceAppliedAfterReset: Fava writes the file but the connection
// breaks before its answer; the file holds the client's text, so the
// answer is a success, not a 502.
func TestPutSourceAppliedAfterReset(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			e := startEmu(t, style, emuOpts{upstream: resetAfterWrite})
			text, sum := e.getSource(e.main)
			want := strings.Replace(text, `"Milk"`, `"Cream"`, 1)
			resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: want, SHA256: sum})
			e.wantSuccess("PUT", resp, m)
			if got := e.read(); got != want {
				t.Fatalf("file:\n%s\nwant:\n%s", got, want)
			}
			if got, want := m["data"], checksum.String(want); got != want {
				t.Fatalf("data=%v, want %s", got, want)
			}
		})
	}
}

// resetAfterWrite is an upstream in front of h that lets h carry out every
// write and then resets the connection instead of answering: the write
// happened, but favaproxy cannot know.
func resetAfterWrite(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(discardWriter{header: http.Header{}}, r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			conn.Close()
		}
	})
}

// discardWriter is a ResponseWriter that drops what is written.
type discardWriter struct{ header http.Header }

func (d discardWriter) Header() http.Header         { return d.header }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// TestGetSourceRemembered: a GET source passes through byte for byte and
// its text is remembered under its checksum.
func TestGetSourceRemembered(t *testing.T) {
	e := startEmu(t, emuStyles[0], emuOpts{})
	resp, body := do(t, http.MethodGet, e.api("source", nil)+"?filename="+e.main, "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"sha256sum"`) {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	direct, directBody := do(t, http.MethodGet, e.up.URL+"/"+testSlug+"/api/source?filename="+e.main, "", nil)
	if got, want := body, directBody; got != want || resp.StatusCode != direct.StatusCode {
		t.Fatalf("through the proxy: %d %q; from Fava: %d %q", resp.StatusCode, got, direct.StatusCode, want)
	}
	text := string(checksum.Normalize([]byte(e.read())))
	if !e.p.bySlug[testSlug].Remembers(text) {
		t.Fatal("version not remembered")
	}
}

// TestOtherFavaErrorsPassThrough: a Fava error that is not a conflict
// keeps Fava's status and body, on every handler of this file's kinds.
func TestOtherFavaErrorsPassThrough(t *testing.T) {
	const favaBody = `{"error":"Invalid amount: 'x'"}` + "\n"
	e := startEmu(t, emuStyles[1], emuOpts{upstream: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(favaBody))
		})
	}})
	text, sum := e.getSource(e.main)
	for _, c := range []struct{ method, name, body string }{
		{http.MethodPut, "source_slice", `{"entry_hash":"abc","source":"x","sha256sum":"00"}`},
		{http.MethodPut, "source", `{"file_path":` + strconv.Quote(e.main) + `,"source":` + strconv.Quote(text+"; x\n") + `,"sha256sum":"` + sum + `"}`},
		{http.MethodPut, "add_account", `{"account":"Assets:Cash"}`},
	} {
		resp, body := do(t, c.method, e.api(c.name, nil), c.body, http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != http.StatusInternalServerError || body != favaBody {
			t.Errorf("%s %s: %d %q, want Fava's 500 %q", c.method, c.name, resp.StatusCode, body, favaBody)
		}
	}
}
