package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/gustfaas/gust"
	"github.com/shopspring/decimal"
)

// DefaultPriceKey is the key of the default prices in Report.Prices. It is
// reserved: no namespace override may use it.
const DefaultPriceKey = "default"

// Prices are the unit prices of one namespace, in the pricing currency.
type Prices struct {
	PerMillionRequests decimal.Decimal `json:"perMillionRequests"`
	PerGBSecond        decimal.Decimal `json:"perGBSecond"`
}

// Pricing turns usage into money. It comes from configuration; the
// currency is a label, not logic.
type Pricing struct {
	Currency string
	// Default applies to every namespace without an override.
	Default Prices
	// Granularity is the billing granularity the workers round durations
	// up to: a positive whole number of microseconds. Reports state it;
	// the rounding itself is done when a call is metered.
	Granularity time.Duration
	// Namespaces holds per-namespace overrides.
	Namespaces map[string]Prices
}

// DefaultPricing returns the list prices of the leading hosted FaaS (AWS
// Lambda, x86): 0.20 USD per million requests and 0.0000166667 USD per
// GB-second, billed per 1 ms.
func DefaultPricing() Pricing {
	return Pricing{
		Currency: "USD",
		Default: Prices{
			PerMillionRequests: decimal.RequireFromString("0.20"),
			PerGBSecond:        decimal.RequireFromString("0.0000166667"),
		},
		Granularity: time.Millisecond,
	}
}

// PricesFor returns the prices of namespace ns: its override, or the
// default.
func (p Pricing) PricesFor(ns string) Prices {
	if o, ok := p.Namespaces[ns]; ok {
		return o
	}
	return p.Default
}

// Validate checks the pricing and returns an EINVALID *gust.Error naming
// the first wrong field ("pricing.granularity",
// "pricing.namespaces.NS.perGBSecond", ...).
func (p Pricing) Validate() error {
	if p.Currency == "" {
		return gust.Invalidf("pricing.currency", "currency is required")
	}
	if p.Granularity <= 0 || p.Granularity%time.Microsecond != 0 {
		return gust.Invalidf("pricing.granularity", "granularity %s must be a positive whole number of microseconds", p.Granularity)
	}
	if err := p.Default.validate("pricing."); err != nil {
		return err
	}
	names := make([]string, 0, len(p.Namespaces))
	for ns := range p.Namespaces {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		if ns == DefaultPriceKey {
			return gust.Invalidf("pricing.namespaces."+ns, "namespace override %q is reserved for the default prices", ns)
		}
		if !gust.ValidName(ns) {
			return gust.Invalidf("pricing.namespaces."+ns, "namespace %q is not a valid name", ns)
		}
		if err := p.Namespaces[ns].validate("pricing.namespaces." + ns + "."); err != nil {
			return err
		}
	}
	return nil
}

func (ps Prices) validate(prefix string) error {
	if ps.PerMillionRequests.IsNegative() {
		return gust.Invalidf(prefix+"perMillionRequests", "price %s is negative", ps.PerMillionRequests)
	}
	if ps.PerGBSecond.IsNegative() {
		return gust.Invalidf(prefix+"perGBSecond", "price %s is negative", ps.PerGBSecond)
	}
	return nil
}

// pricingFile is the JSON form of Pricing. Absent fields (nil) keep the
// value they have.
type pricingFile struct {
	Currency           *string                   `json:"currency,omitempty"`
	PerMillionRequests *decimal.Decimal          `json:"perMillionRequests,omitempty"`
	PerGBSecond        *decimal.Decimal          `json:"perGBSecond,omitempty"`
	Granularity        *string                   `json:"granularity,omitempty"`
	Namespaces         map[string]pricesOverride `json:"namespaces,omitempty"`
}

type pricesOverride struct {
	PerMillionRequests *decimal.Decimal `json:"perMillionRequests,omitempty"`
	PerGBSecond        *decimal.Decimal `json:"perGBSecond,omitempty"`
}

// UnmarshalJSON applies a JSON pricing document on top of p, so that
// fields the document leaves out keep their values (start from
// DefaultPricing). The form is
//
//	{"currency":"EUR","perMillionRequests":"0.20","perGBSecond":"0.0000166667",
//	 "granularity":"1ms","namespaces":{"team-a":{"perMillionRequests":"0.1"}}}
//
// A namespace override starts from the default prices after the document's
// top-level prices apply, so it needs to name only the prices that differ.
// Prices may be JSON strings or numbers; they are parsed exactly. Unknown
// fields are an error. UnmarshalJSON does not validate.
func (p *Pricing) UnmarshalJSON(b []byte) error {
	var f pricingFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return err
	}
	if f.Currency != nil {
		p.Currency = *f.Currency
	}
	if f.PerMillionRequests != nil {
		p.Default.PerMillionRequests = *f.PerMillionRequests
	}
	if f.PerGBSecond != nil {
		p.Default.PerGBSecond = *f.PerGBSecond
	}
	if f.Granularity != nil {
		d, err := time.ParseDuration(*f.Granularity)
		if err != nil {
			return gust.Invalidf("pricing.granularity", "granularity %q is not a duration such as \"1ms\"", *f.Granularity)
		}
		p.Granularity = d
	}
	if len(f.Namespaces) > 0 {
		merged := make(map[string]Prices, len(p.Namespaces)+len(f.Namespaces))
		for ns, ps := range p.Namespaces {
			merged[ns] = ps
		}
		for ns, o := range f.Namespaces {
			ps, ok := merged[ns]
			if !ok {
				ps = p.Default
			}
			if o.PerMillionRequests != nil {
				ps.PerMillionRequests = *o.PerMillionRequests
			}
			if o.PerGBSecond != nil {
				ps.PerGBSecond = *o.PerGBSecond
			}
			merged[ns] = ps
		}
		p.Namespaces = merged
	}
	return nil
}

// MarshalJSON writes p in the form UnmarshalJSON reads.
func (p Pricing) MarshalJSON() ([]byte, error) {
	gran := p.Granularity.String()
	f := pricingFile{
		Currency:           &p.Currency,
		PerMillionRequests: &p.Default.PerMillionRequests,
		PerGBSecond:        &p.Default.PerGBSecond,
		Granularity:        &gran,
	}
	if len(p.Namespaces) > 0 {
		f.Namespaces = make(map[string]pricesOverride, len(p.Namespaces))
		for ns, ps := range p.Namespaces {
			f.Namespaces[ns] = pricesOverride{PerMillionRequests: &ps.PerMillionRequests, PerGBSecond: &ps.PerGBSecond}
		}
	}
	return json.Marshal(f)
}

// LoadPricing reads a JSON pricing file (see Pricing.UnmarshalJSON) on top
// of DefaultPricing and validates the result.
func LoadPricing(path string) (Pricing, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Pricing{}, fmt.Errorf("read pricing: %w", err)
	}
	p := DefaultPricing()
	if err := json.Unmarshal(b, &p); err != nil {
		return Pricing{}, fmt.Errorf("parse pricing %s: %w", path, err)
	}
	if err := p.Validate(); err != nil {
		return Pricing{}, fmt.Errorf("pricing %s: %w", path, err)
	}
	return p, nil
}
