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
	// Username and Password, when Password is set, go with every request
	// as HTTP Basic: the admin's credentials (Username "" is "admin").
	Username string
	Password string
	// Token, when set (and Password is not), goes with every request as
	// "Authorization: Bearer": a namespace's key.
	Token string
}

// NewClient returns a client of the gateway at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/")}
}

// authorize adds the client's credentials to req. Calls of functions carry
// them too: a private function needs them, and the gateway removes them
// before the function sees the request.
func (c *Client) authorize(req *http.Request) {
	if req.Header.Get("Authorization") != "" {
		return // the caller's own (gust invoke --header)
	}
	switch {
	case c.Password != "":
		user := c.Username
		if user == "" {
			user = AdminUser
		}
		req.SetBasicAuth(user, c.Password)
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
}

// send authorizes req and sends it.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	c.authorize(req)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway at %s: %w", c.BaseURL, err)
	}
	return resp, nil
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
	resp, err := c.send(req)
	if err != nil {
		return err
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

func namespaceQuery(ns string) string {
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
	err := c.do(ctx, http.MethodGet, "/system/functions"+namespaceQuery(ns), nil, &out)
	return out, err
}

// Function returns one function's status.
func (c *Client) Function(ctx context.Context, ns, name string) (gust.FunctionStatus, error) {
	var out gust.FunctionStatus
	err := c.do(ctx, http.MethodGet, "/system/function/"+url.PathEscape(name)+namespaceQuery(ns), nil, &out)
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
	resp, err := c.send(req)
	if err != nil {
		return nil, err
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
	resp, err := c.send(req)
	if err != nil {
		return nil, err
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
	resp, err := c.send(req)
	if err != nil {
		return "", err
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

// CheckCredentials asks the gateway whether it takes the client's
// credentials: a GET of /system/functions that answers 401 is a refusal
// (a *gust.Error with code EUNAUTHORIZED). Any other answer is accepted: a
// key of another namespace may see 403 there, yet is a valid key.
func (c *Client) CheckCredentials(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/system/functions", nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return ResponseError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

// CreateNamespace creates a namespace (POST /system/namespace/).
func (c *Client) CreateNamespace(ctx context.Context, ns gust.Namespace) error {
	return c.do(ctx, http.MethodPost, "/system/namespace/", ns, nil)
}

// Namespaces lists the names of the namespaces (GET /system/namespaces,
// OpenFaaS's shape).
func (c *Client) Namespaces(ctx context.Context) ([]string, error) {
	var out []string
	err := c.do(ctx, http.MethodGet, "/system/namespaces", nil, &out)
	return out, err
}

// Namespace returns one namespace with its quota.
func (c *Client) Namespace(ctx context.Context, name string) (gust.Namespace, error) {
	var out gust.Namespace
	err := c.do(ctx, http.MethodGet, "/system/namespace/"+url.PathEscape(name), nil, &out)
	return out, err
}

// DeleteNamespace removes a namespace (DELETE /system/namespace/NAME).
func (c *Client) DeleteNamespace(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/system/namespace/"+url.PathEscape(name), nil, nil)
}

// CreatedKey is the answer of POST /system/keys: the key's record and,
// this once, its token.
type CreatedKey struct {
	gust.APIKey
	// Key is the token to send as "Authorization: Bearer".
	Key string `json:"key"`
}

// CreateKey creates a key of namespace ns; its token is in the answer only.
func (c *Client) CreateKey(ctx context.Context, ns, name string) (CreatedKey, error) {
	var out CreatedKey
	in := struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	}{ns, name}
	err := c.do(ctx, http.MethodPost, "/system/keys", in, &out)
	return out, err
}

// Keys lists the keys the credentials may see, never their tokens.
func (c *Client) Keys(ctx context.Context) ([]gust.APIKey, error) {
	var out []gust.APIKey
	err := c.do(ctx, http.MethodGet, "/system/keys", nil, &out)
	return out, err
}

// DeleteKey revokes a key by id.
func (c *Client) DeleteKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/system/keys/"+url.PathEscape(id), nil, nil)
}

// Secret is a secret as /system/secrets speaks of it (OpenFaaS's shape).
// Value goes only into the gateway; no answer carries it.
type Secret struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Value     string `json:"value,omitempty"`
	// RawValue is a value that is not UTF-8 text (base64 in JSON).
	RawValue []byte `json:"rawValue,omitempty"`
}

// CreateSecret creates a secret (POST; update true replaces one: PUT).
func (c *Client) CreateSecret(ctx context.Context, s Secret, update bool) error {
	method := http.MethodPost
	if update {
		method = http.MethodPut
	}
	return c.do(ctx, method, "/system/secrets", s, nil)
}

// Secrets lists the secrets of a namespace ("" for the default), names only.
func (c *Client) Secrets(ctx context.Context, ns string) ([]Secret, error) {
	var out []Secret
	err := c.do(ctx, http.MethodGet, "/system/secrets"+namespaceQuery(ns), nil, &out)
	return out, err
}

// DeleteSecret removes a secret.
func (c *Client) DeleteSecret(ctx context.Context, ns, name string) error {
	return c.do(ctx, http.MethodDelete, "/system/secrets", Secret{Name: name, Namespace: ns}, nil)
}
