// OpenCV.js as published (@techstark/opencv-js 4.12.0, an old Emscripten) builds its JavaScript
// bindings at run time with `new Function(...)`: the page's Content-Security-Policy (no
// 'unsafe-eval', see src/tandem/server/webapp.py) refuses that, and cv.CascadeClassifier would never
// exist. Rebuilding OpenCV with -sDYNAMIC_EXECUTION=0 needs its whole toolchain; instead the five
// places that generate code are replaced here by the closures later Emscripten releases use in
// their DYNAMIC_EXECUTION=0 builds (embind's createNamedFunction, craftInvokerFunction, dynCall
// wrappers and emval method callers), and the WASM embedded as a data: URL is decoded in place
// instead of fetch()ed (connect-src 'self' refuses data: URLs; it fell back to decoding anyway).
// Each patch must match exactly once, so a new OpenCV.js fails the build instead of going unpatched;
// tests/integration/web compare the faces it finds with the server's.

const PATCHES = [
  {
    name: "createNamedFunction",
    from: /function createNamedFunction\(name,body\)\{.*?\}(?=function extendError\()/s,
    to:
      "function createNamedFunction(name,body){name=makeLegalFunctionName(name);" +
      'return{[name]:function(){"use strict";return body.apply(this,arguments)}}[name]}',
  },
  {
    name: "makeDynCaller",
    from: /function makeDynCaller\(dynCall\)\{.*?return new Function\("dynCall","rawFunction",body\)\(dynCall,rawFunction\)\}(?=var fp;)/s,
    to:
      "function makeDynCaller(dynCall){var n=signature.length-1;" +
      "return function(){var a=[rawFunction];for(var i=0;i<n;++i)a.push(arguments[i]);return dynCall.apply(null,a)}}",
  },
  {
    name: "craftInvokerFunction",
    from: /function craftInvokerFunction\(humanName,argTypes,classType,cppInvokerFunc,cppTargetFunc\)\{.*?return invokerFunction\}(?=function heap32VectorToArray\()/s,
    to: `function craftInvokerFunction(humanName,argTypes,classType,cppInvokerFunc,cppTargetFunc){
var argCount=argTypes.length;
if(argCount<2){throwBindingError("argTypes array size mismatch! Must at least get return value and 'this' types!")}
var isClassMethodFunc=argTypes[1]!==null&&classType!==null;
var needsDestructorStack=false;
for(var i=1;i<argTypes.length;++i){if(argTypes[i]!==null&&argTypes[i].destructorFunction===undefined){needsDestructorStack=true;break}}
var returns=argTypes[0].name!=="void";
var expected=argCount-2;
return createNamedFunction(humanName,function(){
if(arguments.length!==expected){throwBindingError("function "+humanName+" called with "+arguments.length+" arguments, expected "+expected+" args!")}
var destructors=needsDestructorStack?[]:null;
var thisWired;
var wired=[cppTargetFunc];
if(isClassMethodFunc){thisWired=argTypes[1].toWireType(destructors,this);wired.push(thisWired)}
var argsWired=[];
for(var i=0;i<expected;++i){argsWired.push(argTypes[i+2].toWireType(destructors,arguments[i]));wired.push(argsWired[i])}
var rv=cppInvokerFunc.apply(null,wired);
if(needsDestructorStack){runDestructors(destructors)}else{
for(var i=isClassMethodFunc?1:2;i<argTypes.length;++i){var param=i===1?thisWired:argsWired[i-2];if(argTypes[i].destructorFunction!==null){argTypes[i].destructorFunction(param)}}}
if(returns){return argTypes[0].fromWireType(rv)}})}`,
  },
  {
    name: "__emval_get_method_caller",
    from: /function __emval_get_method_caller\(argCount,argTypes\)\{.*?return __emval_addMethodCaller\(invokerFunction\)\}(?=function __emval_get_property\()/s,
    to: `function __emval_get_method_caller(argCount,argTypes){
var types=__emval_lookupTypes(argCount,argTypes);var retType=types[0];
var signatureName=retType.name+"_$"+types.slice(1).map(function(t){return t.name}).join("_")+"$";
var invokerFunction=createNamedFunction("methodCaller_"+signatureName,function(handle,name,destructors,args){
var offset=0;var argv=[];
for(var i=0;i<argCount-1;++i){argv.push(types[i+1].readValueFromPointer(args+offset));offset+=types[i+1]["argPackAdvance"]}
var rv=handle[name].apply(handle,argv);
for(var i=0;i<argCount-1;++i){if(types[i+1]["deleteObject"]){types[i+1].deleteObject(argv[i])}}
if(!retType.isVoid){return retType.toWireType(destructors,rv)}});
return __emval_addMethodCaller(invokerFunction)}`,
  },
  {
    name: "getBinaryPromise",
    from: 'function getBinaryPromise(){if(!wasmBinary&&(ENVIRONMENT_IS_WEB||ENVIRONMENT_IS_WORKER)&&typeof fetch==="function"){',
    to: 'function getBinaryPromise(){if(!wasmBinary&&(ENVIRONMENT_IS_WEB||ENVIRONMENT_IS_WORKER)&&!isDataURI(wasmBinaryFile)&&typeof fetch==="function"){',
  },
];

// What must not survive: every way this file could turn a string into code.
const FORBIDDEN = [/new Function\b/, /new_\(Function\b/, /[^\w.$]eval\(/, /\bsetTimeout\(\s*["'`]/, /\bsetInterval\(\s*["'`]/];

export function withoutEval(source) {
  let out = source;
  for (const p of PATCHES) {
    const count = typeof p.from === "string" ? out.split(p.from).length - 1 : (out.match(new RegExp(p.from.source, "gs")) || []).length;
    if (count !== 1) throw new Error(`opencv.js: ${p.name} found ${count} times, expected once; update web/scripts/opencv-csp.mjs for this OpenCV.js`);
    out = out.replace(p.from, () => p.to);
  }
  for (const f of FORBIDDEN) {
    const m = f.exec(out);
    if (m) throw new Error(`opencv.js still turns strings into code after patching (${JSON.stringify(out.slice(m.index - 40, m.index + 60))})`);
  }
  return out;
}
