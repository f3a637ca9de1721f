// fleetcast test guest: a wasi:http/proxy component written in JavaScript.
//
// Every request, any method and path: status 200, header
// `x-hello-version: js-1.0.0`, body `hello from javascript\n`.
//
// Built with componentize-js (see build.sh). StarlingMonkey's fetch-event
// support answers wasi:http/incoming-handler#handle with this listener.

const VERSION = 'js-1.0.0';
const BODY = 'hello from javascript\n';

addEventListener('fetch', (event) =>
  event.respondWith(
    new Response(BODY, {
      status: 200,
      headers: { 'x-hello-version': VERSION, 'content-type': 'text/plain' },
    }),
  ),
);
