package gust_test

import (
	"errors"
	"fmt"
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
