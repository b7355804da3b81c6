// Package browser holds the console's browser tests: they drive a real
// headless Chromium (Debian's chromium, deployments/dev/chromium.sh) from Go
// with github.com/chromedp/chromedp against the console served by the API
// listener, with the triage state in the dev ClickHouse engine.
//
// Every page a test opens is checked with axe-core (deployments/dev/axe.sh,
// injected into the page): a serious or critical violation fails the test
// with its rule id and nodes. The page's Content-Security-Policy violations
// (an inline script or style the policy refused) and its script errors fail
// it too.
//
// One browser serves the whole test package; each simulated person gets a
// browser context of their own (separate cookies), so two sessions can race
// on the same alert. Tests wait on DOM conditions, never on time.
//
// With EHRDEV_SCREENSHOTS=1 the tests rewrite the screenshots under
// docs/console/ that docs/console.md shows; without it they write nothing
// into the tree.
//
// The package has no non-test code.
package browser
