package favaproxy_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/favaproxy/favaproxy"
)

func TestErrorCodeAndMessage(t *testing.T) {
	wrapped := fmt.Errorf("validate: %w", favaproxy.FieldErrorf("entries[0].date", "not a date"))
	if got, want := favaproxy.ErrorCode(wrapped), favaproxy.EInvalid; got != want {
		t.Errorf("ErrorCode=%q, want %q", got, want)
	}
	if got, want := favaproxy.ErrorMessage(wrapped), "entries[0].date: not a date"; got != want {
		t.Errorf("ErrorMessage=%q, want %q", got, want)
	}
	plain := errors.New("disk on fire")
	if got, want := favaproxy.ErrorCode(plain), favaproxy.EInternal; got != want {
		t.Errorf("ErrorCode=%q, want %q", got, want)
	}
	if got, want := favaproxy.ErrorMessage(plain), "internal error"; got != want {
		t.Errorf("ErrorMessage=%q, want %q", got, want)
	}
	if favaproxy.ErrorCode(nil) != "" {
		t.Error("ErrorCode(nil) is not empty")
	}
}

func TestKindIsWrite(t *testing.T) {
	for k, want := range map[favaproxy.Kind]bool{
		favaproxy.KindRead: false, favaproxy.KindStatic: false,
		favaproxy.KindAddEntries: true, favaproxy.KindWrite: true, favaproxy.KindDocument: true,
	} {
		if got := k.IsWrite(); got != want {
			t.Errorf("%s.IsWrite()=%v, want %v", k, got, want)
		}
	}
}
