package gust

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultNamespace is the namespace of a function deployed without one, as
// in OpenFaaS.
const DefaultNamespace = "openfaas-fn"

// Scaling and timing labels a function may carry. Their defaults are the
// Default* constants below.
const (
	LabelScaleMin    = "com.openfaas.scale.min"
	LabelScaleMax    = "com.openfaas.scale.max"
	LabelConcurrency = "gust.concurrency"
	LabelIdleTimeout = "gust.idle-timeout"
	// LabelPauseAfter is the idle time after which an instance above the
	// warm minimum is paused (frozen: it keeps its memory, uses no CPU,
	// and a call thaws it in milliseconds instead of a cold start); it is
	// stopped after LabelIdleTimeout as before. "0" never pauses, and so
	// does a pause-after at or past the idle timeout.
	LabelPauseAfter = "gust.pause-after"
	LabelTimeout    = "gust.timeout"
	// LabelHealth selects the readiness check: an HTTP path (default
	// "/_/health") or "tcp" for a plain TCP connect.
	LabelHealth = "gust.health"
	// LabelPrivate "true" makes a function callable only by the admin or
	// a key of its namespace, on a gateway that authenticates.
	LabelPrivate = "gust.private"
	// LabelUser is the user a function's container runs as, "UID" or
	// "UID:GID" (numeric, so that its secrets can be owned by it), for an
	// image that needs another than the image's own or, when the image
	// names none, DefaultUser.
	LabelUser = "gust.user"

	// OpenFaaS Pro's autoscaling labels. LabelScaleType is capacity
	// (calls in flight per instance), rps (calls per second per
	// instance) or cpu (millicores per instance); unset, the function
	// scales as OpenFaaS Community Edition does (by rate, LabelScaleFactor
	// percent of max a step). LabelScaleZero and LabelScaleZeroDuration
	// are OpenFaaS's names for Gust's scale to zero (min 0) and
	// LabelIdleTimeout.
	LabelScaleType             = "com.openfaas.scale.type"
	LabelScaleTarget           = "com.openfaas.scale.target"
	LabelScaleTargetProportion = "com.openfaas.scale.target-proportion"
	LabelScaleZero             = "com.openfaas.scale.zero"
	LabelScaleZeroDuration     = "com.openfaas.scale.zero-duration"
	LabelScaleFactor           = "com.openfaas.scale.factor"
	// LabelScaleWindow is the stable window of a scale type, 6s to 1h
	// (60s by default), as Knative's autoscaling.knative.dev/window; the
	// panic window is a tenth of it.
	LabelScaleWindow = "gust.scale.window"
)

// Scale types (LabelScaleType).
const (
	ScaleCapacity = "capacity"
	ScaleRPS      = "rps"
	ScaleCPU      = "cpu"
)

// Defaults for the scaling labels.
const (
	DefaultScaleMin    = 0
	DefaultScaleMax    = 20
	DefaultConcurrency = 100 // Knative's default target
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultPauseAfter: calls that come back within 30 s of each other
	// never wait for a thaw (about 15 ms here, docs/benchmarks.md "Latest
	// full run"), while an instance left idle stops using CPU long before the
	// idle timeout stops it. OpenWhisk pauses after 50 ms, which makes
	// bursty traffic pay the thaw again and again.
	DefaultPauseAfter = 30 * time.Second
	DefaultTimeout    = 60 * time.Second
	DefaultHealthPath = "/_/health"
	// DefaultPidsLimit is set on every container so a fork bomb stays inside.
	DefaultPidsLimit = 1024
	// DefaultMemory is the memory limit of a function that sets none. It is
	// also the size its calls are billed at.
	DefaultMemory = 128 << 20
	// DefaultNanoCPUs is the CPU limit of a function that sets none: one
	// core, so that one busy or looping function cannot take every core of
	// a shared host from the others and from Gust's own processes, while a
	// single-threaded function (most are) runs at full speed.
	DefaultNanoCPUs = 1e9
	// DefaultUser is the user a container runs as when neither its image
	// nor LabelUser names one: nobody:nogroup, not root, so that a
	// container escape does not start as root on the host.
	DefaultUser = "65534:65534"
)

// FunctionSpec is what a user deploys. Its JSON field names are those of
// OpenFaaS's FunctionDeployment so that OpenFaaS clients work unmodified.
type FunctionSpec struct {
	Service                string             `json:"service"`
	Image                  string             `json:"image"`
	Namespace              string             `json:"namespace,omitempty"`
	EnvProcess             string             `json:"envProcess,omitempty"`
	EnvVars                map[string]string  `json:"envVars,omitempty"`
	Constraints            []string           `json:"constraints,omitempty"`
	Secrets                []string           `json:"secrets,omitempty"`
	Labels                 map[string]string  `json:"labels,omitempty"`
	Annotations            map[string]string  `json:"annotations,omitempty"`
	Limits                 *FunctionResources `json:"limits,omitempty"`
	Requests               *FunctionResources `json:"requests,omitempty"`
	ReadOnlyRootFilesystem bool               `json:"readOnlyRootFilesystem,omitempty"`
}

// FunctionResources are memory and CPU quantities in Kubernetes notation
// ("128Mi", "0.5", "500m"), as OpenFaaS takes them.
type FunctionResources struct {
	Memory string `json:"memory,omitempty"`
	CPU    string `json:"cpu,omitempty"`
}

// FunctionStatus is what the management API returns for a deployed
// function: OpenFaaS's FunctionStatus field names.
type FunctionStatus struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Namespace   string            `json:"namespace"`
	EnvProcess  string            `json:"envProcess"`
	EnvVars     map[string]string `json:"envVars,omitempty"`
	Constraints []string          `json:"constraints,omitempty"`
	Secrets     []string          `json:"secrets,omitempty"`
	// Labels and Annotations are always objects, never null or left
	// out: OpenFaaS clients read them unconditionally.
	Labels                 map[string]string  `json:"labels"`
	Annotations            map[string]string  `json:"annotations"`
	Limits                 *FunctionResources `json:"limits,omitempty"`
	Requests               *FunctionResources `json:"requests,omitempty"`
	ReadOnlyRootFilesystem bool               `json:"readOnlyRootFilesystem,omitempty"`
	InvocationCount        float64            `json:"invocationCount"`
	Replicas               uint64             `json:"replicas"`
	AvailableReplicas      uint64             `json:"availableReplicas"`
	CreatedAt              time.Time          `json:"createdAt"`
}

// Function is the registry record of a deployed function.
type Function struct {
	Spec      FunctionSpec `json:"spec"`
	CreatedAt time.Time    `json:"createdAt"`
	UpdatedAt time.Time    `json:"updatedAt"`
	// Version counts deployments of this name; instances of an older
	// version are replaced.
	Version uint64 `json:"version"`
	// Scaled is the last order of scale-function, if any: the number of
	// instances wanted from then on, as OpenFaaS sets replicas. It is not
	// a minimum: autoscaling moves the function within its min and max
	// afterwards (internal/autoscale). A deploy clears it.
	Scaled *ScaleOrder `json:"scaled,omitempty"`
}

// ScaleOrder is one scale-function order.
type ScaleOrder struct {
	Replicas int       `json:"replicas"`
	At       time.Time `json:"at"`
}

// Key is the registry key of the function: "namespace.name".
func (f *Function) Key() string { return FunctionKey(f.Spec.Namespace, f.Spec.Service) }

// FunctionKey joins a namespace and a name into a registry key.
func FunctionKey(namespace, name string) string { return namespace + "." + name }

// Config returns the parsed configuration of the function. The spec was
// validated when it was deployed, so errors are not expected here; any
// label that no longer parses keeps its default.
func (f *Function) Config() FunctionConfig {
	c, _ := ParseConfig(&f.Spec)
	return c
}

// FunctionConfig is the runtime configuration derived from a spec.
type FunctionConfig struct {
	Min         int
	Max         int
	Concurrency int
	IdleTimeout time.Duration
	// PauseAfter is LabelPauseAfter; 0 never pauses.
	PauseAfter  time.Duration
	Timeout     time.Duration
	MemoryBytes int64 // container memory limit; DefaultMemory when unset
	NanoCPUs    int64 // 0: no CPU limit set (runtimes apply DefaultNanoCPUs)
	// User is LabelUser ("UID" or "UID:GID"); "" when the label is unset.
	User       string
	HealthPath string
	HealthTCP  bool
	Retry      RetryPolicy
	// Topics are the core-NATS subjects that trigger the function.
	Topics []string
	// Stream and StreamFilter name a JetStream stream that triggers the
	// function durably.
	Stream, StreamFilter string
	// Autoscaling (internal/autoscale): ScaleType is "" (OpenFaaS CE's
	// rate rule) or a Scale* constant; ScaleTarget per instance (0: the
	// decider's default), ScaleProportion of it (0: 0.9), ScaleFactor
	// percent of max per step of the rate rule. ScaleToZero allows the
	// pool to stop its last instance after IdleTimeout without calls:
	// min 0, or com.openfaas.scale.zero=true.
	ScaleType       string
	ScaleTarget     float64
	ScaleProportion float64
	ScaleFactor     int
	ScaleToZero     bool
	ScaleWindow     time.Duration // 0: the default (60 s)
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidName reports whether s is a valid function or namespace name: a
// DNS-1123 label of at most 63 characters, as Kubernetes and OpenFaaS
// require.
func ValidName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

// Normalize fills defaults (the namespace) in place.
func (s *FunctionSpec) Normalize() {
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
}

// Validate checks the spec within DefaultBounds and returns an EINVALID
// *Error naming the first field that is wrong.
func (s *FunctionSpec) Validate() error { return s.ValidateWithin(DefaultBounds()) }

// ValidateWithin checks the spec, and that it asks for no more than the
// operator's bounds b allow, and returns an EINVALID *Error naming the
// first field that is wrong. It is where a deploy is validated.
func (s *FunctionSpec) ValidateWithin(b Bounds) error {
	b = b.WithDefaults()
	if s.Service == "" {
		return Invalidf("service", "service is required")
	}
	if !ValidName(s.Service) {
		return Invalidf("service", "service %q is not a valid name: lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit", s.Service)
	}
	if s.Namespace != "" && !ValidName(s.Namespace) {
		return Invalidf("namespace", "namespace %q is not a valid name", s.Namespace)
	}
	if strings.TrimSpace(s.Image) == "" {
		return Invalidf("image", "image is required")
	}
	if strings.ContainsAny(s.Image, " \t\n") {
		return Invalidf("image", "image %q contains whitespace", s.Image)
	}
	for k := range s.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return Invalidf("envVars", "environment variable name %q is not valid", k)
		}
	}
	if err := b.checkMeta("labels", s.Labels, b.MaxLabels); err != nil {
		return err
	}
	if err := b.checkMeta("annotations", s.Annotations, b.MaxAnnotations); err != nil {
		return err
	}
	c, err := ParseConfig(s)
	if err != nil {
		return err
	}
	return b.check(s, c)
}

// parseScaleLabels parses OpenFaaS Pro's autoscaling labels into c, whose
// Min and IdleTimeout are parsed already.
func parseScaleLabels(labels map[string]string, c *FunctionConfig) error {
	c.ScaleFactor = 20 // OpenFaaS's default
	c.ScaleToZero = c.Min == 0
	if v, ok := labels[LabelScaleType]; ok {
		switch t := strings.TrimSpace(v); t {
		case ScaleCapacity, ScaleRPS, ScaleCPU:
			c.ScaleType = t
		default:
			return Invalidf("labels."+LabelScaleType, "label %s=%q: want capacity, rps or cpu", LabelScaleType, v)
		}
	}
	if v, ok := labels[LabelScaleTarget]; ok {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(n > 0) || math.IsInf(n, 0) {
			return Invalidf("labels."+LabelScaleTarget, "label %s=%q: want a number > 0 (per instance: calls in flight, calls per second or CPU millicores)", LabelScaleTarget, v)
		}
		c.ScaleTarget = n
		if c.ScaleType == "" {
			c.ScaleType = ScaleRPS // OpenFaaS Pro's default type
		}
	}
	if v, ok := labels[LabelScaleTargetProportion]; ok {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(n > 0 && n <= 1) {
			return Invalidf("labels."+LabelScaleTargetProportion, "label %s=%q: want a number above 0 and at most 1, such as 0.9", LabelScaleTargetProportion, v)
		}
		c.ScaleProportion = n
	}
	if v, ok := labels[LabelScaleFactor]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 100 {
			return Invalidf("labels."+LabelScaleFactor, "label %s=%q: want a whole percent of max from 0 to 100 (0: the rate never scales up)", LabelScaleFactor, v)
		}
		c.ScaleFactor = n
	}
	if v, ok := labels[LabelScaleWindow]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 6*time.Second || d > time.Hour {
			return Invalidf("labels."+LabelScaleWindow, "label %s=%q: want a Go duration from 6s to 1h, such as 60s", LabelScaleWindow, v)
		}
		c.ScaleWindow = d
	}
	if v, ok := labels[LabelScaleZero]; ok {
		z, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return Invalidf("labels."+LabelScaleZero, "label %s=%q: want true or false", LabelScaleZero, v)
		}
		if !z && c.Min == 0 {
			c.Min = 1 // no scale to zero: keep one
		}
		c.ScaleToZero = z
	}
	if v, ok := labels[LabelScaleZeroDuration]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return Invalidf("labels."+LabelScaleZeroDuration, "label %s=%q: want a positive Go duration such as 30s or 15m", LabelScaleZeroDuration, v)
		}
		if o, ok := labels[LabelIdleTimeout]; ok {
			if od, _ := time.ParseDuration(strings.TrimSpace(o)); od != d {
				return Invalidf("labels."+LabelScaleZeroDuration, "label %s=%q and its alias %s=%q disagree: set one", LabelScaleZeroDuration, v, LabelIdleTimeout, o)
			}
		}
		c.IdleTimeout = d
	}
	return nil
}

// ParseConfig parses the scaling labels and resource limits of a spec.
func ParseConfig(s *FunctionSpec) (FunctionConfig, error) {
	c := FunctionConfig{
		Min:         DefaultScaleMin,
		Max:         DefaultScaleMax,
		Concurrency: DefaultConcurrency,
		IdleTimeout: DefaultIdleTimeout,
		PauseAfter:  DefaultPauseAfter,
		Timeout:     DefaultTimeout,
		MemoryBytes: DefaultMemory,
		HealthPath:  DefaultHealthPath,
		Retry: RetryPolicy{
			MaxAttempts: 3, MinDelay: time.Second, MaxDelay: time.Minute, MaxAge: 24 * time.Hour,
			On5xx: true, On429: true, OnTimeout: true, OnCrash: true,
		},
	}
	var err error
	intLabel := func(key string, dst *int, min int) {
		v, ok := s.Labels[key]
		if !ok || err != nil {
			return
		}
		n, perr := strconv.Atoi(strings.TrimSpace(v))
		if perr != nil || n < min {
			err = Invalidf("labels."+key, "label %s=%q: want an integer >= %d", key, v, min)
			return
		}
		*dst = n
	}
	durLabel := func(key string, dst *time.Duration) {
		v, ok := s.Labels[key]
		if !ok || err != nil {
			return
		}
		d, perr := time.ParseDuration(strings.TrimSpace(v))
		if perr != nil || d <= 0 {
			err = Invalidf("labels."+key, "label %s=%q: want a positive Go duration such as 30s or 5m", key, v)
			return
		}
		*dst = d
	}
	intLabel(LabelRetryAttempts, &c.Retry.MaxAttempts, 1)
	durLabel(LabelRetryMinDelay, &c.Retry.MinDelay)
	durLabel(LabelRetryMaxDelay, &c.Retry.MaxDelay)
	durLabel(LabelRetryMaxAge, &c.Retry.MaxAge)
	intLabel(LabelScaleMin, &c.Min, 0)
	intLabel(LabelScaleMax, &c.Max, 1)
	intLabel(LabelConcurrency, &c.Concurrency, 1)
	durLabel(LabelIdleTimeout, &c.IdleTimeout)
	durLabel(LabelTimeout, &c.Timeout)
	if v, ok := s.Labels[LabelPauseAfter]; ok && err == nil {
		d, perr := time.ParseDuration(strings.TrimSpace(v))
		if strings.TrimSpace(v) == "0" {
			d, perr = 0, nil
		}
		if perr != nil || d < 0 {
			err = Invalidf("labels."+LabelPauseAfter, "label %s=%q: want a Go duration such as 30s, or 0 to never pause", LabelPauseAfter, v)
		} else {
			c.PauseAfter = d
		}
	}
	if err != nil {
		return c, err
	}
	if err := parseScaleLabels(s.Labels, &c); err != nil {
		return c, err
	}
	if c.Retry.MinDelay > c.Retry.MaxDelay {
		return c, Invalidf("labels."+LabelRetryMinDelay, "label %s=%s is above %s=%s", LabelRetryMinDelay, c.Retry.MinDelay, LabelRetryMaxDelay, c.Retry.MaxDelay)
	}
	if v, ok := s.Labels[LabelRetryOn]; ok {
		c.Retry.On5xx, c.Retry.On429, c.Retry.OnTimeout, c.Retry.OnCrash = false, false, false, false
		for _, w := range strings.Split(v, ",") {
			switch strings.TrimSpace(w) {
			case "5xx":
				c.Retry.On5xx = true
			case "429":
				c.Retry.On429 = true
			case "timeout":
				c.Retry.OnTimeout = true
			case "crash":
				c.Retry.OnCrash = true
			case "", "none":
			default:
				return c, Invalidf("labels."+LabelRetryOn, "label %s=%q: want a comma-separated list of 5xx, 429, timeout, crash (or none)", LabelRetryOn, v)
			}
		}
	}
	if v := strings.TrimSpace(s.Annotations[AnnotationTopic]); v != "" {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if !ValidSubject(t) {
				return c, Invalidf("annotations."+AnnotationTopic, "annotation %s: %q is not a valid NATS subject (dot-separated tokens; * for one token; > only last)", AnnotationTopic, t)
			}
			if why := reservedTrigger(s.Namespace, t); why != "" {
				return c, Invalidf("annotations."+AnnotationTopic, "annotation %s: %q %s", AnnotationTopic, t, why)
			}
			c.Topics = append(c.Topics, TriggerSubject(s.Namespace, t))
		}
	}
	if v := s.Annotations[AnnotationStream]; v != "" {
		if !validStreamName(v) {
			return c, Invalidf("annotations."+AnnotationStream, "annotation %s=%q is not a valid JetStream stream name", AnnotationStream, v)
		}
		if reservedStream(v) {
			return c, Invalidf("annotations."+AnnotationStream, "annotation %s=%q: streams named GUST_*, KV_* or OBJ_* are Gust's own and NATS's, not triggers", AnnotationStream, v)
		}
		c.Stream = v
		f := s.Annotations[AnnotationStreamFilter]
		if f != "" {
			if !ValidSubject(f) {
				return c, Invalidf("annotations."+AnnotationStreamFilter, "annotation %s=%q is not a valid NATS subject", AnnotationStreamFilter, f)
			}
			if why := reservedTrigger(s.Namespace, f); why != "" {
				return c, Invalidf("annotations."+AnnotationStreamFilter, "annotation %s: %q %s", AnnotationStreamFilter, f, why)
			}
		}
		if f != "" || !plainSubjects(s.Namespace) {
			// A namespace other than openfaas-fn reads only its own
			// subjects of the stream, even without a filter.
			if f == "" {
				f = ">"
			}
			c.StreamFilter = TriggerSubject(s.Namespace, f)
		}
	}
	if c.Min > c.Max {
		return c, Invalidf("labels."+LabelScaleMin, "label %s=%d is above %s=%d", LabelScaleMin, c.Min, LabelScaleMax, c.Max)
	}
	if h, ok := s.Labels[LabelHealth]; ok {
		switch {
		case h == "tcp":
			c.HealthTCP = true
		case strings.HasPrefix(h, "/"):
			c.HealthPath = h
		default:
			return c, Invalidf("labels."+LabelHealth, "label %s=%q: want an HTTP path starting with / or \"tcp\"", LabelHealth, h)
		}
	}
	if v, ok := s.Labels[LabelUser]; ok {
		if !ValidUser(v) {
			return c, Invalidf("labels."+LabelUser, "label %s=%q: want a numeric UID or UID:GID such as 1000 or 1000:1000", LabelUser, v)
		}
		c.User = v
	}
	if s.Limits != nil {
		if s.Limits.Memory != "" {
			b, perr := ParseMemory(s.Limits.Memory)
			if perr != nil {
				return c, Invalidf("limits.memory", "limits.memory %q: %v", s.Limits.Memory, perr)
			}
			// Below Docker's minimum it is raised to it, not refused:
			// OpenFaaS functions are deployed with 5Mi (the gateway
			// says so in the deploy's answer: MemoryRaised).
			c.MemoryBytes = max(b, DockerMinMemory)
		}
		if s.Limits.CPU != "" {
			n, perr := ParseCPU(s.Limits.CPU)
			if perr != nil {
				return c, Invalidf("limits.cpu", "limits.cpu %q: %v", s.Limits.CPU, perr)
			}
			c.NanoCPUs = n
		}
	}
	if s.Requests != nil {
		if s.Requests.Memory != "" {
			if _, perr := ParseMemory(s.Requests.Memory); perr != nil {
				return c, Invalidf("requests.memory", "requests.memory %q: %v", s.Requests.Memory, perr)
			}
		}
		if s.Requests.CPU != "" {
			if _, perr := ParseCPU(s.Requests.CPU); perr != nil {
				return c, Invalidf("requests.cpu", "requests.cpu %q: %v", s.Requests.CPU, perr)
			}
		}
	}
	return c, nil
}

// ValidUser reports whether s is a numeric "UID" or "UID:GID", each
// between 0 and 2^31-1.
func ValidUser(s string) bool {
	u, g, hasG := strings.Cut(s, ":")
	ok := func(n string) bool {
		if n == "" || len(n) > 10 || strings.Trim(n, "0123456789") != "" {
			return false
		}
		v, err := strconv.ParseInt(n, 10, 64)
		return err == nil && v <= math.MaxInt32
	}
	return ok(u) && (!hasG || ok(g))
}

var memSuffixes = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"m", 1 << 20}, {"g", 1 << 30}, // Docker style "128m", "1g"
}

// ParseMemory parses a memory quantity: Kubernetes notation ("128Mi", "1Gi",
// "500M"), Docker notation ("128m", "1g") or a plain number of bytes.
func ParseMemory(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	for _, m := range memSuffixes {
		if strings.HasSuffix(s, m.suffix) {
			s, mult = strings.TrimSuffix(s, m.suffix), m.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	// Checked after rounding: a tiny quantity ("0.001") is 0 bytes.
	if err != nil || !(f > 0) || math.IsInf(f, 0) || f*mult >= math.MaxInt64 || math.Round(f*mult) < 1 {
		return 0, fmt.Errorf("want a positive quantity such as 128Mi, 1Gi or 256m")
	}
	return int64(math.Round(f * mult)), nil
}

// ParseCPU parses a CPU quantity ("0.5", "2", "500m") into nano-CPUs.
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	div := 1.0
	if strings.HasSuffix(s, "m") {
		s, div = strings.TrimSuffix(s, "m"), 1000
	}
	f, err := strconv.ParseFloat(s, 64)
	// Checked after rounding: a tiny quantity ("1e-10") is 0 nano-CPUs,
	// which would read as no limit set.
	if err != nil || !(f > 0) || math.IsInf(f, 0) || f/div > 1e6 || math.Round(f/div*1e9) < 1 {
		return 0, fmt.Errorf("want a positive quantity such as 0.5, 2 or 500m")
	}
	return int64(math.Round(f / div * 1e9)), nil
}

// ValidSubject reports whether s is a valid NATS subject or subscription
// pattern: non-empty dot-separated tokens without whitespace, "*" as a
// whole token, ">" only as the whole last token.
func ValidSubject(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return false
		case strings.ContainsAny(t, " \t\r\n"):
			return false
		case t == ">" && i != len(toks)-1:
			return false
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

// validStreamName reports whether s is a usable JetStream stream name.
func validStreamName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

// NamespaceSubjectToken is the first token of the trigger subjects of
// every namespace but DefaultNamespace: a topic T declared by a function
// of namespace N is the subject "ns.N.T". Functions of DefaultNamespace
// keep plain subjects (OpenFaaS's connectors publish those) and may not
// start one with this token, so no namespace can name another's subjects.
const NamespaceSubjectToken = "ns"

// plainSubjects reports whether the functions of namespace ns subscribe to
// their topics as written.
func plainSubjects(ns string) bool { return ns == "" || ns == DefaultNamespace }

// TriggerSubject maps a trigger subject (a topic, or a stream filter) that
// a function of namespace ns declares to the subject it subscribes to:
// unchanged in DefaultNamespace, "ns.NAMESPACE.SUBJECT" in any other. It
// is the one place that mapping is made; publishers see it in
// docs/limits.md.
func TriggerSubject(ns, subject string) string {
	if plainSubjects(ns) {
		return subject
	}
	return NamespaceSubjectToken + "." + ns + "." + subject
}

// reservedTrigger says why a function of namespace ns may not declare the
// trigger subject s (a valid subject or pattern), or "" when it may. The
// subjects of Gust itself (gust.>), of NATS ($KV, $JS, $SYS, every "$"
// first token) and of replies (_INBOX, _GUST_INBOX, every "_" first token)
// are refused, as is a wildcard first token, which would match all of
// them, and, in DefaultNamespace, the first token of the other namespaces'
// subjects.
func reservedTrigger(ns, s string) string {
	first, _, _ := strings.Cut(s, ".")
	switch {
	case first == "*" || first == ">":
		return "starts with a wildcard, which would match Gust's own subjects: name its first token"
	case first == "gust":
		return "is one of Gust's own subjects (gust.>)"
	case strings.HasPrefix(first, "$"):
		return "is one of NATS's own subjects ($KV, $JS, $SYS, ...)"
	case strings.HasPrefix(first, "_"):
		return "is a reply subject (_INBOX, _GUST_INBOX, ...)"
	case first == NamespaceSubjectToken && plainSubjects(ns):
		return "starts with \"" + NamespaceSubjectToken + ".\", which is reserved for the subjects of other namespaces (ns.NAMESPACE.TOPIC)"
	}
	return ""
}

// reservedStream reports whether a stream name is Gust's (GUST_*) or a
// NATS KV bucket's or object store's (KV_*, OBJ_*), in any case.
func reservedStream(s string) bool {
	u := strings.ToUpper(s)
	return strings.HasPrefix(u, "GUST_") || strings.HasPrefix(u, "KV_") || strings.HasPrefix(u, "OBJ_")
}

// Bounds are the operator's upper bounds on what a deploy may ask for. A
// zero field takes the value of DefaultBounds.
type Bounds struct {
	// MaxMemoryBytes bounds limits.memory and requests.memory.
	MaxMemoryBytes int64
	// MaxNanoCPUs bounds limits.cpu and requests.cpu.
	MaxNanoCPUs int64
	// MaxScale bounds com.openfaas.scale.max (and so scale.min).
	MaxScale int
	// MaxConcurrency bounds gust.concurrency.
	MaxConcurrency int
	// MaxTimeout bounds gust.timeout.
	MaxTimeout time.Duration
	// MaxIdleTimeout bounds gust.idle-timeout.
	MaxIdleTimeout time.Duration
	// MaxRetryAttempts bounds gust.retry.max-attempts.
	MaxRetryAttempts int
	// MaxRetryAge bounds gust.retry.max-age and gust.retry.max-delay.
	MaxRetryAge time.Duration
	// MaxLabels and MaxAnnotations bound how many a spec has.
	MaxLabels, MaxAnnotations int
	// MaxKeyBytes and MaxValueBytes bound each label's and annotation's
	// key and value.
	MaxKeyBytes, MaxValueBytes int
}

// DefaultBounds returns the bounds a gateway applies unless its operator
// sets others.
func DefaultBounds() Bounds {
	return Bounds{
		MaxMemoryBytes:   16 << 30,
		MaxNanoCPUs:      16e9,
		MaxScale:         1000,
		MaxConcurrency:   10000,
		MaxTimeout:       time.Hour,
		MaxIdleTimeout:   24 * time.Hour,
		MaxRetryAttempts: 100,
		// Longer than the status of an async call is kept (7 days)
		// would retry calls nobody can follow any more.
		MaxRetryAge:    7 * 24 * time.Hour,
		MaxLabels:      64,
		MaxAnnotations: 64,
		MaxKeyBytes:    256,
		MaxValueBytes:  4 << 10,
	}
}

// WithDefaults returns b with its zero fields filled from DefaultBounds.
func (b Bounds) WithDefaults() Bounds {
	d := DefaultBounds()
	fill := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	filli := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	filld := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&b.MaxMemoryBytes, d.MaxMemoryBytes)
	fill(&b.MaxNanoCPUs, d.MaxNanoCPUs)
	filli(&b.MaxScale, d.MaxScale)
	filli(&b.MaxConcurrency, d.MaxConcurrency)
	filld(&b.MaxTimeout, d.MaxTimeout)
	filld(&b.MaxIdleTimeout, d.MaxIdleTimeout)
	filli(&b.MaxRetryAttempts, d.MaxRetryAttempts)
	filld(&b.MaxRetryAge, d.MaxRetryAge)
	filli(&b.MaxLabels, d.MaxLabels)
	filli(&b.MaxAnnotations, d.MaxAnnotations)
	filli(&b.MaxKeyBytes, d.MaxKeyBytes)
	filli(&b.MaxValueBytes, d.MaxValueBytes)
	return b
}

// Check refuses bounds below what a spec gets by default (DefaultMemory,
// DefaultScaleMax, ...): every deploy that sets nothing would be refused.
// Its errors name the gateway's flag.
func (b Bounds) Check() error {
	b = b.WithDefaults()
	d, _ := ParseConfig(&FunctionSpec{})
	below := func(flag string, v, def any) error {
		return Invalidf(flag, "--%s %v is below what a function gets by default, %v", flag, v, def)
	}
	switch {
	case b.MaxMemoryBytes < d.MemoryBytes:
		return below("max-memory", b.MaxMemoryBytes, d.MemoryBytes)
	case b.MaxNanoCPUs < DefaultNanoCPUs:
		return below("max-cpu", float64(b.MaxNanoCPUs)/1e9, DefaultNanoCPUs/1e9)
	case b.MaxScale < d.Max:
		return below("max-scale", b.MaxScale, d.Max)
	case b.MaxConcurrency < d.Concurrency:
		return below("max-concurrency", b.MaxConcurrency, d.Concurrency)
	case b.MaxTimeout < d.Timeout:
		return below("max-timeout", b.MaxTimeout, d.Timeout)
	case b.MaxIdleTimeout < d.IdleTimeout:
		return below("max-idle-timeout", b.MaxIdleTimeout, d.IdleTimeout)
	case b.MaxRetryAttempts < d.Retry.MaxAttempts:
		return below("max-retry-attempts", b.MaxRetryAttempts, d.Retry.MaxAttempts)
	case b.MaxRetryAge < d.Retry.MaxAge:
		return below("max-retry-age", b.MaxRetryAge, d.Retry.MaxAge)
	}
	return nil
}

// checkMeta checks the number (at most most) and the size of a spec's
// labels or annotations, field naming which.
func (b Bounds) checkMeta(field string, m map[string]string, most int) error {
	if len(m) > most {
		return Invalidf(field, "%s: %d entries, at most %d are allowed", field, len(m), most)
	}
	for k, v := range m {
		if len(k) > b.MaxKeyBytes {
			return Invalidf(field, "%s: a key of %d bytes, at most %d are allowed", field, len(k), b.MaxKeyBytes)
		}
		if len(v) > b.MaxValueBytes {
			return Invalidf(field+"."+k, "%s.%s: a value of %d bytes, at most %d are allowed", field, k, len(v), b.MaxValueBytes)
		}
	}
	return nil
}

// check compares the parsed configuration c of spec s with b.
func (b Bounds) check(s *FunctionSpec, c FunctionConfig) error {
	if c.MemoryBytes > b.MaxMemoryBytes {
		// Unset, it is DefaultMemory: only bounds that Check refuses
		// are below that.
		return Invalidf("limits.memory", "limits.memory of %dMi is above the largest this gateway allows, %dMi", c.MemoryBytes>>20, b.MaxMemoryBytes>>20)
	}
	if c.NanoCPUs > b.MaxNanoCPUs {
		return Invalidf("limits.cpu", "limits.cpu of %g is above the largest this gateway allows, %g", float64(c.NanoCPUs)/1e9, float64(b.MaxNanoCPUs)/1e9)
	}
	if s.Requests != nil {
		if m, err := ParseMemory(s.Requests.Memory); err == nil && m > b.MaxMemoryBytes {
			return Invalidf("requests.memory", "requests.memory %q is above the largest this gateway allows, %dMi", s.Requests.Memory, b.MaxMemoryBytes>>20)
		}
		if n, err := ParseCPU(s.Requests.CPU); err == nil && n > b.MaxNanoCPUs {
			return Invalidf("requests.cpu", "requests.cpu %q is above the largest this gateway allows, %g", s.Requests.CPU, float64(b.MaxNanoCPUs)/1e9)
		}
	}
	over := func(label string, v, max any) error {
		return Invalidf("labels."+label, "label %s=%v is above the largest this gateway allows, %v", label, v, max)
	}
	switch {
	case c.Max > b.MaxScale:
		return over(LabelScaleMax, c.Max, b.MaxScale)
	case c.Min > b.MaxScale:
		return over(LabelScaleMin, c.Min, b.MaxScale)
	case c.Concurrency > b.MaxConcurrency:
		return over(LabelConcurrency, c.Concurrency, b.MaxConcurrency)
	case c.Timeout > b.MaxTimeout:
		return over(LabelTimeout, c.Timeout, b.MaxTimeout)
	case c.IdleTimeout > b.MaxIdleTimeout:
		return over(LabelIdleTimeout, c.IdleTimeout, b.MaxIdleTimeout)
	case c.Retry.MaxAttempts > b.MaxRetryAttempts:
		return over(LabelRetryAttempts, c.Retry.MaxAttempts, b.MaxRetryAttempts)
	case c.Retry.MaxAge > b.MaxRetryAge:
		return over(LabelRetryMaxAge, c.Retry.MaxAge, b.MaxRetryAge)
	case c.Retry.MaxDelay > b.MaxRetryAge:
		return over(LabelRetryMaxDelay, c.Retry.MaxDelay, b.MaxRetryAge)
	}
	return nil
}

// DockerMinMemory is the smallest memory limit Docker accepts (6 MiB).
const DockerMinMemory = 6 << 20

// MemoryRaised says, when spec's memory limit is below DockerMinMemory,
// what it was raised to, for the deployer to read; "" otherwise.
func (s *FunctionSpec) MemoryRaised() string {
	if s.Limits == nil || s.Limits.Memory == "" {
		return ""
	}
	b, err := ParseMemory(s.Limits.Memory)
	if err != nil || b >= DockerMinMemory {
		return ""
	}
	return fmt.Sprintf("limits.memory %q is below the 6Mi Docker accepts: raised to 6Mi", s.Limits.Memory)
}
