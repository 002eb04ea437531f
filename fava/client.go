package fava

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy"
)

// MaxReplyBytes bounds the body of Fava's answer to a request the Client
// sends; Fava's answers to writes are a few hundred bytes.
const MaxReplyBytes = 16 << 20

// Request is one request to Fava.
type Request struct {
	// Kind is what the request does, for the Client's Observer.
	Kind favaproxy.Kind
	// Method is the HTTP method, upper-cased.
	Method string
	// URL is the absolute URL at Fava.
	URL *url.URL
	// Host is the Host header to send ("" for URL's host).
	Host string
	// Header is sent as it is; the Client never changes it.
	Header http.Header
	Body   []byte
}

// Response is Fava's answer to a Request, read whole, with its Reply
// classified once.
type Response struct {
	Status int
	// Header is Fava's header minus hop-by-hop headers.
	Header http.Header
	Body   []byte
	// Reply is Classify of the answer.
	Reply Reply
}

// Observer receives the Client's measurements. Nil means none.
type Observer interface {
	// Upstream observes how long Fava took to answer a request of kind.
	Upstream(kind favaproxy.Kind, d time.Duration)
	// UpstreamError counts a failed request: reason is "dial", "timeout",
	// "status_5xx" or "bad_reply".
	UpstreamError(reason string)
}

// Client sends requests to Fava, one attempt each: it follows no redirect,
// keeps no cookies and, with a Transport that keeps no connection alive,
// never resends a request (net/http may resend a request on a reused
// connection that broke).
type Client struct {
	// Transport carries the requests. Nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Observer, if set, receives timings and failures.
	Observer Observer
}

// Do sends req and reads Fava's whole answer (up to MaxReplyBytes). A
// failure to get an answer is an EUpstream error (502), or ETimeout (504)
// when Fava did not answer in time; IsDialError tells whether the request
// never reached Fava.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	var body io.Reader = http.NoBody
	if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, req.URL.String(), body)
	if err != nil {
		return nil, fmt.Errorf("call fava: %w", err)
	}
	hr.URL = req.URL
	if req.Host != "" {
		hr.Host = req.Host
	}
	hr.Header = req.Header.Clone()
	if hr.Header == nil {
		hr.Header = http.Header{}
	}
	t := c.Transport
	if t == nil {
		t = http.DefaultTransport
	}
	t0 := time.Now()
	resp, err := t.RoundTrip(hr)
	c.observe(req.Kind, time.Since(t0))
	if err != nil {
		err = upstreamError(err)
		if favaproxy.ErrorCode(err) == favaproxy.ETimeout {
			c.failed("timeout")
		} else {
			c.failed("dial")
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		c.failed("status_5xx")
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	switch {
	case err != nil:
		c.failed("bad_reply")
		return nil, upstreamError(err)
	case len(b) > MaxReplyBytes:
		c.failed("bad_reply")
		return nil, fmt.Errorf("call fava: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava's answer is too large"))
	}
	RemoveHopHeaders(resp.Header)
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b,
		Reply: Classify(resp.StatusCode, resp.Header, b)}, nil
}

func (c *Client) observe(kind favaproxy.Kind, d time.Duration) {
	if c.Observer != nil {
		c.Observer.Upstream(kind, d)
	}
}

func (c *Client) failed(reason string) {
	if c.Observer != nil {
		c.Observer.UpstreamError(reason)
	}
}

// upstreamError turns an error of a call to Fava into EUpstream (502) or,
// for a timeout, ETimeout (504).
func upstreamError(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("call fava: %w: %w", favaproxy.Errorf(favaproxy.ETimeout, "fava did not answer in time"), err)
	}
	return fmt.Errorf("call fava: %w: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava could not be reached"), err)
}

// CallError is the error of a pass-through request that Fava did not
// answer: EUpstream (502), or ETimeout (504) for a timeout.
func CallError(err error) error { return upstreamError(err) }

// IsDialError reports whether err is a failure to connect to Fava: the
// request never reached it, so sending it again is safe.
func IsDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// hopHeaders are removed from requests and responses at every hop (RFC 9110
// 7.6.1), as httputil.ReverseProxy does; headers named by Connection too.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopHeaders deletes hop-by-hop headers, and the headers that
// Connection names, from h.
func RemoveHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		h.Del(f)
	}
}
