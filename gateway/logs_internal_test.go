package gateway

import (
	"net/url"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

func TestParseLogQuery(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		query string
		want  gust.LogQuery
		field string // the field a bad query names
	}{
		{query: "name=f", want: gust.LogQuery{Name: "f", Namespace: gust.DefaultNamespace}},
		{query: "name=f&namespace=team-a&instance=abc&tail=5&follow=true",
			want: gust.LogQuery{Name: "f", Namespace: "team-a", Instance: "abc", Tail: 5, Follow: true}},
		{query: "name=f&since=2026-12-02T09:00:00Z", want: gust.LogQuery{Name: "f", Namespace: gust.DefaultNamespace, Since: now.Add(-time.Hour)}},
		{query: "name=f&since=2026-12-02T09:00:00.5%2B01:00", want: gust.LogQuery{Name: "f", Namespace: gust.DefaultNamespace, Since: now.Add(-2*time.Hour + 500*time.Millisecond)}},
		{query: "name=f&since=10m", want: gust.LogQuery{Name: "f", Namespace: gust.DefaultNamespace, Since: now.Add(-10 * time.Minute)}},
		{query: "name=f&tail=-1&follow=false", want: gust.LogQuery{Name: "f", Namespace: gust.DefaultNamespace}}, // faas-cli's default tail
		{query: "", field: "name"},
		{query: "name=Bad_Name", field: "name"},
		{query: "name=f&namespace=..", field: "namespace"},
		{query: "name=f&since=yesterday", field: "since"},
		{query: "name=f&since=-5m", field: "since"},
		{query: "name=f&tail=ten", field: "tail"},
		{query: "name=f&tail=10001", field: "tail"},
		{query: "name=f&follow=maybe", field: "follow"},
	} {
		v, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseLogQuery(v, now)
		if tc.field != "" {
			var ge *gust.Error
			if err == nil || gust.ErrorCode(err) != gust.EINVALID {
				t.Errorf("%q: %v, want an invalid error", tc.query, err)
			} else if ge = err.(*gust.Error); ge.Field != tc.field {
				t.Errorf("%q: field %q, want %q", tc.query, ge.Field, tc.field)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if !got.Since.Equal(tc.want.Since) {
			t.Errorf("%q: since %v, want %v", tc.query, got.Since, tc.want.Since)
		}
		got.Since, tc.want.Since = time.Time{}, time.Time{}
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.query, got, tc.want)
		}
	}
}
