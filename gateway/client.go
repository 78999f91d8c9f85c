package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/gustfaas/gust"
)

// Client calls a Gust gateway over HTTP. The CLI uses it like any other
// caller would.
type Client struct {
	// BaseURL is the gateway, e.g. http://127.0.0.1:8080.
	BaseURL string
	// HTTP is the client used; http.DefaultClient when nil.
	HTTP *http.Client
}

// NewClient returns a client of the gateway at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/")}
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// do sends a JSON request and decodes a JSON answer into out (if not nil).
// Error answers come back as *gust.Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return ResponseError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// ResponseError turns an error answer of the gateway into a *gust.Error.
func ResponseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte(resp.Status)
	}
	return gust.ErrorOfAnswer(resp.StatusCode, b)
}

func nsQuery(ns string) string {
	if ns == "" {
		return ""
	}
	return "?namespace=" + url.QueryEscape(ns)
}

// Deploy creates or replaces a function (update: PUT, which fails for a
// function that does not exist).
func (c *Client) Deploy(ctx context.Context, spec gust.FunctionSpec, update bool) error {
	method := http.MethodPost
	if update {
		method = http.MethodPut
	}
	return c.do(ctx, method, "/system/functions", spec, nil)
}

// Functions lists the functions of a namespace ("" for the default).
func (c *Client) Functions(ctx context.Context, ns string) ([]gust.FunctionStatus, error) {
	var out []gust.FunctionStatus
	err := c.do(ctx, http.MethodGet, "/system/functions"+nsQuery(ns), nil, &out)
	return out, err
}

// Function returns one function's status.
func (c *Client) Function(ctx context.Context, ns, name string) (gust.FunctionStatus, error) {
	var out gust.FunctionStatus
	err := c.do(ctx, http.MethodGet, "/system/function/"+url.PathEscape(name)+nsQuery(ns), nil, &out)
	return out, err
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, ns, name string) error {
	return c.do(ctx, http.MethodDelete, "/system/functions", deleteRequest{FunctionName: name, Namespace: ns}, nil)
}

// Scale sets a function's warm minimum.
func (c *Client) Scale(ctx context.Context, ns, name string, replicas int64) error {
	return c.do(ctx, http.MethodPost, "/system/scale-function/"+url.PathEscape(name), scaleRequest{ServiceName: name, Namespace: ns, Replicas: &replicas}, nil)
}

// Invoke calls a function and returns the raw answer; the caller closes
// its body. path is the sub-path ("" or "/..."), query the raw query.
func (c *Client) Invoke(ctx context.Context, method, name, ns, path, query string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.callURL("/function/", name, ns, path, query), body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway at %s: %w", c.BaseURL, err)
	}
	return resp, nil
}

// Billing fetches a billing report; format "csv" returns CSV text, any
// other the JSON document. query holds the report's filters.
func (c *Client) Billing(ctx context.Context, query url.Values) ([]byte, error) {
	return c.raw(ctx, "/system/billing?"+query.Encode())
}

// Invocations lists call records, newest first, one page; query holds the
// filters, limit and cursor.
func (c *Client) Invocations(ctx context.Context, query url.Values) ([]gust.CallRecord, string, error) {
	var out invocationList
	err := c.do(ctx, http.MethodGet, "/system/invocations?"+query.Encode(), nil, &out)
	return out.Invocations, out.NextCursor, err
}

// Invocation returns the record of one call.
func (c *Client) Invocation(ctx context.Context, callID string) (gust.CallRecord, error) {
	var out gust.CallRecord
	err := c.do(ctx, http.MethodGet, "/system/invocations/"+url.PathEscape(callID), nil, &out)
	return out, err
}

// raw GETs path and returns the body of a 2xx answer.
func (c *Client) raw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, ResponseError(resp)
	}
	return io.ReadAll(resp.Body)
}

// InvokeAsync enqueues an async call and returns its call id.
func (c *Client) InvokeAsync(ctx context.Context, method, name, ns, path, query string, body io.Reader, header http.Header) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.callURL("/async-function/", name, ns, path, query), body)
	if err != nil {
		return "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return "", fmt.Errorf("gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", ResponseError(resp)
	}
	return resp.Header.Get(gust.HeaderCallID), nil
}

// DeadLetters lists dead letters.
func (c *Client) DeadLetters(ctx context.Context, q url.Values) ([]gust.DeadLetter, error) {
	var out []gust.DeadLetter
	err := c.do(ctx, http.MethodGet, "/system/deadletters?"+q.Encode(), nil, &out)
	return out, err
}

// DeadLetter returns one dead letter.
func (c *Client) DeadLetter(ctx context.Context, callID string) (gust.DeadLetter, error) {
	var out gust.DeadLetter
	err := c.do(ctx, http.MethodGet, "/system/deadletters/"+url.PathEscape(callID), nil, &out)
	return out, err
}

// Redrive sends a dead letter back to its queue.
func (c *Client) Redrive(ctx context.Context, callID string) error {
	return c.do(ctx, http.MethodPost, "/system/deadletters/"+url.PathEscape(callID)+"/redrive", nil, nil)
}

// PurgeDeadLetters removes dead letters and returns how many.
func (c *Client) PurgeDeadLetters(ctx context.Context, q url.Values) (int, error) {
	var out struct {
		Purged int `json:"purged"`
	}
	err := c.do(ctx, http.MethodDelete, "/system/deadletters?"+q.Encode(), nil, &out)
	return out.Purged, err
}

// callURL is the URL of a call: prefix + NAME[.NAMESPACE] + path + ?query.
func (c *Client) callURL(prefix, name, ns, path, query string) string {
	u := c.BaseURL + prefix + name
	if ns != "" {
		u += "." + ns
	}
	u += path
	if query != "" {
		u += "?" + query
	}
	return u
}
