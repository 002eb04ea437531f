package fava_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
)

var (
	jsonHeader = http.Header{"Content-Type": {"application/json"}}
	htmlHeader = http.Header{"Content-Type": {"text/html; charset=utf-8"}}
)

func TestClassify(t *testing.T) {
	const conflictMsg = "The file at '/data/main.beancount' changed externally."
	tests := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		outcome fava.Outcome
		style   fava.Style
		message string
		data    string
		mtime   string
		path    string
	}{
		// Fava <= 1.29.
		{"Success127", 200, jsonHeader, `{"data":"Stored 2 entries.","mtime":"1717243200000000000","success":true}` + "\n",
			fava.Success, fava.Style127, "", `"Stored 2 entries."`, "1717243200000000000", ""},
		{"SuccessObject127", 200, jsonHeader, `{"success": true, "data": {"file_path": "/a", "sha256sum": "ab", "source": "x"}, "mtime": "5"}`,
			fava.Success, fava.Style127, "", `{"file_path": "/a", "sha256sum": "ab", "source": "x"}`, "5", ""},
		{"Conflict127", 200, jsonHeader, `{"error":"` + conflictMsg + `","success":false}`,
			fava.Conflict, fava.Style127, conflictMsg, "", "", "/data/main.beancount"},
		{"UnknownHash127", 200, jsonHeader, `{"error":"No entry found for hash \"abc\"","success":false}`,
			fava.UnknownHash, fava.Style127, `No entry found for hash "abc"`, "", "", ""},
		{"InvalidAmount127", 200, jsonHeader, `{"error":"Invalid amount: 12 usd","success":false}`,
			fava.ClientError, fava.Style127, "Invalid amount: 12 usd", "", "", ""},
		{"InvalidJSON127", 200, jsonHeader, `{"error":"Invalid JSON request.","success":false}`,
			fava.ClientError, fava.Style127, "Invalid JSON request.", "", "", ""},
		{"MissingParam127", 200, jsonHeader, `{"error":"Invalid API request: Parameter ` + "`entries`" + ` is missing.","success":false}`,
			fava.ClientError, fava.Style127, "Invalid API request: Parameter `entries` is missing.", "", "", ""},
		{"SuccessFalseNoError127", 200, jsonHeader, `{"success":false}`,
			fava.UpstreamError, fava.Style127, "", "", "", ""},
		{"SuccessNotBool127", 200, jsonHeader, `{"success":"yes","data":1}`,
			fava.UpstreamError, fava.Style127, "", "", "", ""},
		// Fava >= 1.30.
		{"Success130", 200, jsonHeader, `{"data":"Stored 1 entries.","mtime":"1717243200000000000"}` + "\n",
			fava.Success, fava.Style130, "", `"Stored 1 entries."`, "1717243200000000000", ""},
		{"SuccessTrue130", 200, jsonHeader, `{"data":true,"mtime":"7"}`,
			fava.Success, fava.Style130, "", `true`, "7", ""},
		{"Conflict130", 500, jsonHeader, `{"error":"` + conflictMsg + `"}`,
			fava.Conflict, fava.Style130, conflictMsg, "", "", "/data/main.beancount"},
		{"ConflictQuoteInPath130", 500, jsonHeader, `{"error":"The file at '/d/it's.beancount' changed externally."}`,
			fava.Conflict, fava.Style130, "The file at '/d/it's.beancount' changed externally.", "", "", "/d/it's.beancount"},
		{"UnknownHash500", 500, jsonHeader, `{"error":"No entry found for hash \"abc\""}`,
			fava.UnknownHash, fava.Style130, `No entry found for hash "abc"`, "", "", ""},
		{"UnknownHash404", 404, jsonHeader, `{"error":"No entry found for hash \"abc\""}`,
			fava.UnknownHash, fava.Style130, `No entry found for hash "abc"`, "", "", ""},
		{"KeyError130", 500, jsonHeader, `{"error":"KeyError: 'narration'"}`,
			fava.ClientError, fava.Style130, "KeyError: 'narration'", "", "", ""},
		{"NonSource130", 500, jsonHeader, `{"error":"Trying to read a non-source file at '/etc/passwd'"}`,
			fava.ClientError, fava.Style130, "Trying to read a non-source file at '/etc/passwd'", "", "", ""},
		{"MissingParam400", 400, jsonHeader, `{"error":"Invalid API request: Parameter ` + "`filename`" + ` is missing."}`,
			fava.ClientError, fava.Style130, "Invalid API request: Parameter `filename` is missing.", "", "", ""},
		{"DocumentsFolder422", 422, jsonHeader, `{"error":"You need to set a documents folder."}`,
			fava.ClientError, fava.Style130, "You need to set a documents folder.", "", "", ""},
		{"TargetExists409", 409, jsonHeader, `{"error":"/docs/a.pdf already exists."}`,
			fava.ClientError, fava.Style130, "/docs/a.pdf already exists.", "", "", ""},
		{"ErrorWith200", 200, jsonHeader, `{"error":"odd"}`,
			fava.ClientError, fava.Style130, "odd", "", "", ""},
		{"ErrorNotString", 500, jsonHeader, `{"error":42}`,
			fava.UpstreamError, fava.Style130, "", "", "", ""},
		{"DataWithErrorStatus", 500, jsonHeader, `{"data":1,"mtime":"1"}`,
			fava.UpstreamError, fava.Style130, "", "", "", ""},
		// Not Fava's JSON API at all.
		{"HTML404", 404, htmlHeader, "<!doctype html><title>404 Not Found</title>", fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"HTML405", 405, htmlHeader, "<!doctype html><title>405 Method Not Allowed</title>", fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"HTML500", 500, htmlHeader, "<!doctype html><title>500 Internal Server Error</title>", fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"Gateway502", 502, nil, "Bad Gateway", fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"Empty200", 200, nil, "", fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"Truncated200", 200, jsonHeader, `{"data":"Stored 2 ent`, fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"TrailingGarbage", 200, jsonHeader, `{"data":1,"mtime":"1"} x`, fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"Array", 200, jsonHeader, `[1,2]`, fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"OtherJSON", 200, jsonHeader, `{"foo":1}`, fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
		{"Null", 200, jsonHeader, `null`, fava.UpstreamError, fava.StyleUnknown, "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fava.Classify(tt.status, tt.header, []byte(tt.body))
			if got, want := r.Outcome, tt.outcome; got != want {
				t.Fatalf("outcome=%v, want %v (message %q)", got, want, r.Message)
			}
			if got, want := r.Style, tt.style; got != want {
				t.Errorf("style=%v, want %v", got, want)
			}
			if got, want := fava.DetectStyle([]byte(tt.body)), tt.style; got != want {
				t.Errorf("DetectStyle=%v, want %v", got, want)
			}
			if got, want := r.Status, tt.status; got != want {
				t.Errorf("status=%d, want %d", got, want)
			}
			if tt.outcome == fava.UpstreamError {
				if r.Message == "" {
					t.Errorf("upstream error without a description")
				}
			} else if got, want := r.Message, tt.message; got != want {
				t.Errorf("message=%q, want %q", got, want)
			}
			if got, want := string(r.Data), tt.data; got != want {
				t.Errorf("data=%s, want %s", got, want)
			}
			if got, want := r.Mtime, tt.mtime; got != want {
				t.Errorf("mtime=%q, want %q", got, want)
			}
			if got, want := r.ConflictPath, tt.path; got != want {
				t.Errorf("conflict path=%q, want %q", got, want)
			}
		})
	}
}

func TestParseStyle(t *testing.T) {
	tests := []struct {
		in   string
		want fava.Style
	}{
		{"", fava.StyleUnknown}, {"auto", fava.StyleUnknown}, {"unknown", fava.StyleUnknown},
		{"1.27", fava.Style127}, {"1.26.4", fava.Style127}, {"1.29", fava.Style127}, {"v1.27.3", fava.Style127},
		{"1.30", fava.Style130}, {"1.30.0", fava.Style130}, {"1.30.7", fava.Style130},
		{"1.30.8", fava.Style1308}, {"1.30.9", fava.Style1308}, {"1.30.10", fava.Style1308}, {"1.30.16", fava.Style1308}, {"1.31", fava.Style1308}, {"2.0", fava.Style1308},
	}
	for _, tt := range tests {
		got, err := fava.ParseStyle(tt.in)
		if err != nil {
			t.Fatalf("ParseStyle(%q): %v", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("ParseStyle(%q)=%v, want %v", tt.in, got, tt.want)
		}
	}
	for _, s := range []fava.Style{fava.StyleUnknown, fava.Style127, fava.Style130, fava.Style1308} {
		if got, err := fava.ParseStyle(s.String()); err != nil || got != s {
			t.Errorf("ParseStyle(%q)=%v, %v; want %v", s.String(), got, err, s)
		}
	}
	for _, bad := range []string{"1", "x.y", "1.30.1.2", "1..3", "1.030", "-1.2"} {
		if _, err := fava.ParseStyle(bad); err == nil {
			t.Errorf("ParseStyle(%q) accepted", bad)
		}
	}
	if got, want := fava.Style130.MoveMethod(), http.MethodGet; got != want {
		t.Errorf("1.30 move=%s, want %s", got, want)
	}
	if got, want := fava.Style1308.MoveMethod(), http.MethodPut; got != want {
		t.Errorf("1.30.10 move=%s, want %s", got, want)
	}
	if got, want := fava.Style127.MoveMethod(), http.MethodGet; got != want {
		t.Errorf("1.27 move=%s, want %s", got, want)
	}
}

func TestEncodersRoundTrip(t *testing.T) {
	styles := []fava.Style{fava.Style127, fava.Style130, fava.Style1308}
	for _, style := range styles {
		t.Run(style.String(), func(t *testing.T) {
			body := fava.SuccessBody(style, fava.StoredMessage(3), "42")
			r := fava.Classify(200, jsonHeader, body)
			if got, want := r.Outcome, fava.Success; got != want {
				t.Fatalf("success body %s classified %v", body, got)
			}
			if got, want := string(r.Data), `"Stored 3 entries."`; got != want {
				t.Errorf("data=%s, want %s", got, want)
			}
			if got, want := r.Mtime, "42"; got != want {
				t.Errorf("mtime=%q, want %q", got, want)
			}
			if got, want := strings.Contains(string(body), `"success":true`), style == fava.Style127; got != want {
				t.Errorf("body %s: success key present=%v, want %v", body, got, want)
			}

			raw := fava.SuccessBody(style, json.RawMessage(`{"a":1}`), "1")
			if r := fava.Classify(200, nil, raw); string(r.Data) != `{"a":1}` {
				t.Errorf("raw data body %s: data=%s", raw, r.Data)
			}

			status, body := fava.ErrorReply(style, 500, "Invalid amount: x")
			wantStatus := 500
			if style == fava.Style127 {
				wantStatus = 200
			}
			if status != wantStatus {
				t.Errorf("error status=%d, want %d", status, wantStatus)
			}
			r = fava.Classify(status, jsonHeader, body)
			if r.Outcome != fava.ClientError || r.Message != "Invalid amount: x" {
				t.Errorf("error body %s classified %v %q", body, r.Outcome, r.Message)
			}

			msg := fava.ConflictMessage("/l/main.beancount")
			c := fava.ConflictInfo{Kind: fava.ConflictSlice, FilePath: "/l/main.beancount", CurrentSHA256: "abc123"}
			status, body = fava.ConflictReply(style, msg, c)
			if got, want := status, http.StatusConflict; got != want {
				t.Fatalf("conflict status=%d, want %d", got, want)
			}
			r = fava.Classify(status, jsonHeader, body)
			if r.Outcome != fava.Conflict || r.ConflictPath != "/l/main.beancount" {
				t.Errorf("conflict body %s classified %v path %q", body, r.Outcome, r.ConflictPath)
			}
			var got struct {
				Error    string            `json:"error"`
				Success  *bool             `json:"success"`
				Conflict map[string]string `json:"conflict"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Error != msg {
				t.Errorf("error=%q, want %q", got.Error, msg)
			}
			if (got.Success != nil) != (style == fava.Style127) || (got.Success != nil && *got.Success) {
				t.Errorf("success key in %s wrong for style %v", body, style)
			}
			want := map[string]string{"kind": "slice", "file_path": "/l/main.beancount", "current_sha256sum": "abc123"}
			for k, v := range want {
				if got.Conflict[k] != v {
					t.Errorf("conflict[%s]=%q, want %q", k, got.Conflict[k], v)
				}
			}
		})
	}
}

func TestStoredMessage(t *testing.T) {
	// Fava's put_add_entries: f"Stored {len(entries)} entries." in 1.27 and 1.30.16.
	for n, want := range map[int]string{0: "Stored 0 entries.", 1: "Stored 1 entries.", 12: "Stored 12 entries."} {
		if got := fava.StoredMessage(n); got != want {
			t.Errorf("StoredMessage(%d)=%q, want %q", n, got, want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`{"success":true,"data":"x","mtime":"1"}`, `{"success":false,"error":"The file at 'a' changed externally."}`,
		`{"error":"No entry found for hash \"a\""}`, `{"data":null}`, `<html>`, ``, `{"error":"The file at '' changed externally."}`,
		`{"error":"The file at ' changed externally."}`, `{"success":1}`, `{"mtime":5,"data":1}`,
	} {
		f.Add(200, []byte(s))
		f.Add(500, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r := fava.Classify(status, nil, body)
		switch r.Outcome {
		case fava.Success:
			if status < 200 || status > 299 {
				t.Fatalf("success with status %d", status)
			}
			if r.Style == fava.StyleUnknown {
				t.Fatalf("success of unknown style")
			}
		case fava.Conflict:
			if fava.ConflictMessage(r.ConflictPath) != r.Message {
				t.Fatalf("conflict path %q does not rebuild message %q", r.ConflictPath, r.Message)
			}
		case fava.UnknownHash, fava.ClientError:
			if r.Style == fava.StyleUnknown {
				t.Fatalf("%v of unknown style", r.Outcome)
			}
		case fava.UpstreamError:
			if r.Message == "" {
				t.Fatalf("upstream error without description")
			}
		}
		if got := fava.DetectStyle(body); got != r.Style {
			t.Fatalf("DetectStyle=%v, Classify style=%v", got, r.Style)
		}
	})
}
