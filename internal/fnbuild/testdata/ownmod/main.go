// Command ownmod is a function in a module of its own.
package main

import "fmt"

func main() {
	fmt.Println("ownmod")
}
