// Command broken does not compile: the fnbuild tests check that the
// compiler's message comes back.
package main

func main() {
	undefinedThing()
}
