package gust_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gustfaas/gust"
)

func TestErrorHelpers(t *testing.T) {
	notFound := gust.Errorf(gust.ENOTFOUND, "function %s not found", "x")
	invalid := gust.Invalidf("image", "image %q is bad", "a b")
	for _, tt := range []struct {
		name      string
		err       error
		wantCode  string
		wantMsg   string
		wantField string
	}{
		{name: "Nil", err: nil, wantCode: "", wantMsg: "", wantField: ""},
		{name: "Error", err: notFound, wantCode: gust.ENOTFOUND, wantMsg: "function x not found"},
		{name: "Invalid", err: invalid, wantCode: gust.EINVALID, wantMsg: `image "a b" is bad`, wantField: "image"},
		{name: "Wrapped", err: fmt.Errorf("deploy: %w", invalid), wantCode: gust.EINVALID, wantMsg: `image "a b" is bad`, wantField: "image"},
		{name: "WrappedTwice", err: fmt.Errorf("a: %w", fmt.Errorf("b: %w", notFound)), wantCode: gust.ENOTFOUND, wantMsg: "function x not found"},
		{name: "Joined", err: errors.Join(errors.New("other"), notFound), wantCode: gust.ENOTFOUND, wantMsg: "function x not found"},
		{name: "Plain", err: errors.New("disk on fire"), wantCode: gust.EINTERNAL, wantMsg: "internal error"},
		{name: "WrappedPlain", err: fmt.Errorf("open: %w", errors.New("disk on fire")), wantCode: gust.EINTERNAL, wantMsg: "internal error"},
		{name: "Sentinel", err: fmt.Errorf("get: %w", gust.ErrNotFound), wantCode: gust.EINTERNAL, wantMsg: "internal error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := gust.ErrorCode(tt.err); got != tt.wantCode {
				t.Errorf("ErrorCode() = %q, want %q", got, tt.wantCode)
			}
			if got := gust.ErrorMessage(tt.err); got != tt.wantMsg {
				t.Errorf("ErrorMessage() = %q, want %q", got, tt.wantMsg)
			}
			if got := gust.ErrorField(tt.err); got != tt.wantField {
				t.Errorf("ErrorField() = %q, want %q", got, tt.wantField)
			}
		})
	}
}

func TestError_Error(t *testing.T) {
	for _, tt := range []struct {
		err  *gust.Error
		want string
	}{
		{gust.Errorf(gust.ECONFLICT, "taken"), "gust error: code=conflict message=taken"},
		{gust.Invalidf("image", "bad"), "gust error: code=invalid field=image message=bad"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{gust.Errorf(gust.ECONFLICT, "x"), http.StatusConflict},
		{gust.Errorf(gust.EINVALID, "x"), http.StatusBadRequest},
		{gust.Errorf(gust.ENOTFOUND, "x"), http.StatusNotFound},
		{gust.Errorf(gust.EUNAUTHORIZED, "x"), http.StatusUnauthorized},
		{gust.Errorf(gust.EFORBIDDEN, "x"), http.StatusForbidden},
		{gust.Errorf(gust.EUNAVAILABLE, "x"), http.StatusServiceUnavailable},
		{gust.Errorf(gust.ETOOLARGE, "x"), http.StatusRequestEntityTooLarge},
		{gust.Errorf(gust.EINTERNAL, "x"), http.StatusInternalServerError},
		{gust.Errorf(gust.EFUNCTION, "x"), http.StatusBadGateway},
		{gust.Errorf(gust.ETIMEOUT, "x"), http.StatusGatewayTimeout},
		{gust.ErrDraining, http.StatusServiceUnavailable},
		{gust.Errorf("made-up", "x"), http.StatusInternalServerError},
		{fmt.Errorf("wrapped: %w", gust.Errorf(gust.ENOTFOUND, "x")), http.StatusNotFound},
		{errors.New("plain"), http.StatusInternalServerError},
	} {
		if got := gust.HTTPStatus(tt.err); got != tt.want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestErrorOfAnswer checks that an error written in ErrorBody's shape with
// its status comes back as the same *Error: the data plane maps an error
// to a status once, whatever the hops.
func TestErrorOfAnswer(t *testing.T) {
	for _, err := range []*gust.Error{
		gust.Invalidf("image", "image %q is bad", "x"),
		gust.Errorf(gust.EUNAVAILABLE, "function a.b could not start"),
		gust.Errorf(gust.ETIMEOUT, "function a.b did not answer within its timeout 1s"),
		gust.Errorf(gust.EFUNCTION, "function a.b failed to answer: connection refused"),
		gust.Errorf(gust.ETOOLARGE, "too big"),
		gust.Errorf(gust.ENOTFOUND, "function a.b not found"),
	} {
		b, _ := json.Marshal(gust.ErrorBodyOf(err))
		got := gust.ErrorOfAnswer(gust.HTTPStatus(err), b)
		if *got != *err {
			t.Errorf("ErrorOfAnswer(%d, %s) = %+v, want %+v", gust.HTTPStatus(err), b, *got, *err)
		}
	}
	if got := gust.ErrorOfAnswer(http.StatusBadGateway, []byte("upstream broke\n")); got.Code != gust.EFUNCTION || got.Message != "upstream broke" {
		t.Errorf("text answer = %+v", got)
	}
	if got := gust.ErrorOfAnswer(http.StatusServiceUnavailable, nil); got.Code != gust.EUNAVAILABLE || !strings.Contains(got.Message, "Unavailable") {
		t.Errorf("empty answer = %+v", got)
	}
}

func TestAttemptID(t *testing.T) {
	for _, tt := range []struct {
		id      string
		attempt int
		want    string
	}{
		{"abc", 0, "abc"}, {"abc", 1, "abc"}, {"abc", 2, "abc~2"}, {"abc", 12, "abc~12"},
	} {
		got := gust.AttemptID(tt.id, tt.attempt)
		if got != tt.want {
			t.Errorf("AttemptID(%q, %d) = %q, want %q", tt.id, tt.attempt, got, tt.want)
		}
		if id, n := gust.SplitAttemptID(got); id != tt.id || n != max(tt.attempt, 1) {
			t.Errorf("SplitAttemptID(%q) = %q, %d; want %q, %d", got, id, n, tt.id, max(tt.attempt, 1))
		}
	}
	for _, id := range []string{"abc~", "abc~1", "abc~0", "abc~02", "abc~x", "~2", "a~b~x"} {
		if got, n := gust.SplitAttemptID(id); got != id || n != 1 {
			t.Errorf("SplitAttemptID(%q) = %q, %d; want the id itself and 1", id, got, n)
		}
	}
}
