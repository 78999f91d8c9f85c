package gust_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/gustfaas/gust"
)

func TestShare(t *testing.T) {
	for _, tt := range []struct {
		total, n int
		want     []int
	}{
		{total: 0, n: 3, want: []int{0, 0, 0}},
		{total: 1, n: 3, want: []int{1, 0, 0}},
		{total: 5, n: 2, want: []int{3, 2}},
		{total: 7, n: 3, want: []int{3, 2, 2}},
		{total: 9, n: 3, want: []int{3, 3, 3}},
		{total: 20, n: 1, want: []int{20}},
		{total: 2, n: 5, want: []int{1, 1, 0, 0, 0}},
	} {
		t.Run(fmt.Sprintf("%d/%d", tt.total, tt.n), func(t *testing.T) {
			sum := 0
			for i := 0; i < tt.n; i++ {
				got := gust.Share(tt.total, i, tt.n)
				if got != tt.want[i] {
					t.Errorf("Share(%d, %d, %d) = %d, want %d", tt.total, i, tt.n, got, tt.want[i])
				}
				sum += got
			}
			if sum != tt.total {
				t.Errorf("shares sum to %d, want %d", sum, tt.total)
			}
		})
	}
	t.Run("NoWorkers", func(t *testing.T) {
		if got := gust.Share(5, 0, 0); got != 0 {
			t.Errorf("Share(5, 0, 0) = %d, want 0", got)
		}
	})
	t.Run("SumsToTotal", func(t *testing.T) {
		for total := 0; total <= 50; total++ {
			for n := 1; n <= 7; n++ {
				sum := 0
				for i := 0; i < n; i++ {
					sum += gust.Share(total, i, n)
				}
				if sum != total {
					t.Errorf("Share(%d, i, %d) sums to %d", total, n, sum)
				}
			}
		}
	})
}

func TestReplyOf(t *testing.T) {
	for _, tt := range []struct {
		name      string
		err       error
		wantCode  string
		wantField string
		wantMsg   string
	}{
		{name: "Nil"},
		{name: "Invalid", err: gust.Invalidf("image", "pull %s: denied", "x"), wantCode: gust.EINVALID, wantField: "image", wantMsg: "pull x: denied"},
		{name: "Wrapped", err: fmt.Errorf("prepare: %w", gust.Errorf(gust.EUNAVAILABLE, "draining")), wantCode: gust.EUNAVAILABLE, wantMsg: "draining"},
		{name: "Internal", err: errors.New("secret detail"), wantCode: gust.EINTERNAL, wantMsg: "internal error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Through JSON, as it travels over the bus.
			data, err := json.Marshal(gust.ReplyOf(tt.err))
			if err != nil {
				t.Fatal(err)
			}
			var rep gust.Reply
			if err := json.Unmarshal(data, &rep); err != nil {
				t.Fatal(err)
			}
			got := rep.Err()
			if tt.err == nil {
				if got != nil {
					t.Fatalf("Err() = %v, want nil", got)
				}
				if string(data) != "{}" {
					t.Errorf("ReplyOf(nil) JSON = %s, want {}", data)
				}
				return
			}
			var ge *gust.Error
			if !errors.As(got, &ge) {
				t.Fatalf("Err() = %T %v, want *gust.Error", got, got)
			}
			if ge.Code != tt.wantCode || ge.Field != tt.wantField || ge.Message != tt.wantMsg {
				t.Errorf("Err() = {%q %q %q}, want {%q %q %q}", ge.Code, ge.Field, ge.Message, tt.wantCode, tt.wantField, tt.wantMsg)
			}
		})
	}
}

func TestPlaceReply_JSON(t *testing.T) {
	in := gust.PlaceReply{Placement: gust.Placement{Workers: []string{"w1", "w2"}, Version: 3}, Reply: gust.ReplyOf(gust.Invalidf("image", "bad"))}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out gust.PlaceReply
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(out.Placement.Workers, out.Placement.Version), "[w1 w2] 3"; got != want {
		t.Errorf("placement = %s, want %s", got, want)
	}
	if got, want := gust.ErrorField(out.Err()), "image"; got != want {
		t.Errorf("field = %q, want %q", got, want)
	}
}
