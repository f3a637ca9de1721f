;; start-trap.wasm: a component whose *instantiation* traps.
;;
;; It has the shape of a wasi:http/proxy component (imports two resources of
;; wasi:http/types@0.2.12, exports wasi:http/incoming-handler@0.2.12 with a
;; correctly typed `handle`), so it compiles and links like any other guest
;; (`Component::new`, `ProxyPre::new` succeed). But its core module has a start
;; function that executes `unreachable`, and the component instantiates that core
;; module, so every instantiation runs the start function and traps before a
;; single request can be handled. `handle` itself would trap too; it is never reached.
;;
;; Converted to binary by wat2wasm/ (see build.sh).
(component
  (import "wasi:http/types@0.2.12" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))

  (core module $m
    (func $trap_on_start unreachable)
    (start $trap_on_start)
    (func (export "handle") (param i32 i32) unreachable))

  ;; Instantiating the core module runs its start function: this is the trap.
  (core instance $i (instantiate $m))

  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.12" (instance $handler)))
