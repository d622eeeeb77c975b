/*
 * cpu_binding.c -- thin CPython binding for cpu_core (module l3ic_jax._cpu).
 *
 * Arrays are any C-contiguous float32 buffers (NumPy arrays, usually flat padded activation buffers); positions
 * are given as element offsets and strides. Every index a kernel can touch is checked against the buffer sizes
 * here, before the GIL is released for the C work. Zero padding of the inputs is the caller's contract
 * (l3ic_jax.cpu_backend allocates zeroed buffers and writes interiors only). The public interface is
 * l3ic_jax.cpu_backend.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "cpu_core.h"

typedef struct {
    Py_buffer view;
    int held;
} fbuf;

static int get_floats(PyObject *obj, fbuf *b, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    b->held = 0;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    const char *f = b->view.format;
    if (b->view.itemsize != 4 || f == NULL || !(strcmp(f, "f") == 0 || strcmp(f, "<f") == 0 || strcmp(f, "=f") == 0)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous float32 buffer", what);
        return -1;
    }
    return 0;
}

static void release(fbuf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

static Py_ssize_t n_floats(const fbuf *b) { return b->view.len / 4; }

/* [lo, hi] must lie inside a buffer of `size` floats. */
static int check_span(long long lo, long long hi, Py_ssize_t size, const char *what) {
    if (lo < 0 || hi >= (long long)size) {
        PyErr_Format(PyExc_ValueError, "%s: the kernel would touch elements %lld..%lld of a buffer of %zd", what, lo,
                     hi, size);
        return -1;
    }
    return 0;
}

static PyObject *py_supported(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(l3ic_cpu_supported());
}

static PyObject *raise_code(int r) {
    if (r == L3IC_ERR_UNSUPPORTED)
        PyErr_SetString(PyExc_RuntimeError, "the CPU kernels are not supported on this machine (AVX-512F needed)");
    else if (r == L3IC_ERR_NOMEM)
        PyErr_NoMemory();
    else
        PyErr_Format(PyExc_ValueError, "invalid arguments (code %d)", r);
    return NULL;
}

#define RAISED 1 /* a check failed and its exception is set (kernel codes are <= 0) */

/* The start of every kernel call: the four buffers of a layer (input, its weights named `wname`, the writable
 * output, bias). Each is marked unheld first, so finish() may release all four whichever one failed. */
static int get_layer_buffers(PyObject *oin, PyObject *oweights, PyObject *oout, PyObject *obias, fbuf *in,
                             fbuf *weights, fbuf *out, fbuf *bias, const char *wname) {
    in->held = weights->held = out->held = bias->held = 0;
    if (get_floats(oin, in, 0, "input") < 0 || get_floats(oweights, weights, 0, wname) < 0 ||
        get_floats(oout, out, 1, "output") < 0 || get_floats(obias, bias, 0, "bias") < 0)
        return -1;
    return 0;
}

/* The end of every kernel call: release its four buffers, and return None for L3IC_OK, else NULL with the
 * exception of the failed check (RAISED) or of the kernel's code. */
static PyObject *finish(int r, fbuf *a, fbuf *b, fbuf *c, fbuf *d) {
    release(a);
    release(b);
    release(c);
    release(d);
    if (r == L3IC_OK) Py_RETURN_NONE;
    return r == RAISED ? NULL : raise_code(r);
}

/* Output span (in floats) written by a layer with this descriptor. */
static long long out_hi(const l3ic_out *o, long long off, int n) {
    long long sn = o->sn, sy = o->sy;
    if (o->mode == L3IC_OUT_PLAIN)
        return off + (n - 1) * sn + (long long)(o->h - 1) * sy + (long long)(o->w - 1) * o->cout + o->cout - 1;
    int q = o->mode == L3IC_OUT_D2S ? o->cout / 4 : 3;
    return off + (n - 1) * sn + (long long)(2 * o->h - 1) * sy + (long long)(2 * o->w - 1) * q + q - 1;
}

/* winograd3x3(m, inp, in_off, in_sn, in_sy, n, h, w, cin, in_lrelu, U, nr,
 *             out, out_off, out_sn, out_sy, mode, cout, bias, residual, lrelu, scale, mb, nthreads) */
static PyObject *py_winograd3x3(PyObject *self, PyObject *args) {
    (void)self;
    int m, n, h, w, cin, in_lrelu, nr, mode, cout, residual, lrelu, mb, nthreads;
    Py_ssize_t in_off, in_sn, in_sy, out_off, out_sn, out_sy;
    float scale;
    PyObject *oin, *oU, *oout, *obias;
    if (!PyArg_ParseTuple(args, "iOnnniiiipOiOnnniiOppfii", &m, &oin, &in_off, &in_sn, &in_sy, &n, &h, &w, &cin,
                          &in_lrelu, &oU, &nr, &oout, &out_off, &out_sn, &out_sy, &mode, &cout, &obias, &residual,
                          &lrelu, &scale, &mb, &nthreads))
        return NULL;
    if ((m != 2 && m != 4) || (nr != 16 && nr != 32) || n < 1 || h < 1 || w < 1 || cin < 1 || cout < 1 ||
        in_sn <= 0 || in_sy <= 0 || out_sn <= 0 || out_sy <= 0 || mode < 0 || mode > 2) {
        PyErr_SetString(PyExc_ValueError, "winograd3x3: invalid sizes, strides or mode");
        return NULL;
    }
    fbuf bin, bU, bout, bbias;
    int r = RAISED;
    if (get_layer_buffers(oin, oU, oout, obias, &bin, &bU, &bout, &bbias, "U") < 0) goto done;
    int th = (h + m - 1) / m, tw = (w + m - 1) / m, alpha = m + 2, P = (cout + nr - 1) / nr;
    long long lo = (long long)in_off - in_sy - cin;
    long long hi = (long long)in_off + (long long)(n - 1) * in_sn + (long long)(m * th) * in_sy +
                   (long long)(m * tw) * cin + cin - 1;
    if (check_span(lo, hi, n_floats(&bin), "winograd3x3 input") < 0) goto done;
    if (check_span(0, (long long)alpha * alpha * P * cin * nr - 1, n_floats(&bU), "winograd3x3 U") < 0) goto done;
    if (check_span(0, cout - 1, n_floats(&bbias), "winograd3x3 bias") < 0) goto done;
    l3ic_in in = {(const float *)bin.view.buf + in_off, in_sn, in_sy, n, h, w, cin};
    l3ic_out out = {(float *)bout.view.buf + out_off, out_sn, out_sy, mode, cout, h, w,
                    (const float *)bbias.view.buf, residual, lrelu, scale};
    if (check_span(out_off, out_hi(&out, out_off, n), n_floats(&bout), "winograd3x3 output") < 0) goto done;
    if (n_floats(&bU) != (Py_ssize_t)alpha * alpha * P * cin * nr) {
        PyErr_SetString(PyExc_ValueError, "winograd3x3: U has the wrong size");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    r = l3ic_winograd3x3(m, &in, in_lrelu, (const float *)bU.view.buf, nr, &out, mb, nthreads);
    Py_END_ALLOW_THREADS
done:
    return finish(r, &bin, &bU, &bout, &bbias);
}

/* conv5x5s2(inp, in_off, in_sn, in_sy, n, h, w, cin, pad_top, pad_left, W, nr,
 *           out, out_off, out_sn, out_sy, oh, ow, cout, bias, lrelu, scale, nthreads) */
static PyObject *py_conv5x5s2(PyObject *self, PyObject *args) {
    (void)self;
    int n, h, w, cin, pt, pl, nr, oh, ow, cout, lrelu, nthreads;
    Py_ssize_t in_off, in_sn, in_sy, out_off, out_sn, out_sy;
    float scale;
    PyObject *oin, *oW, *oout, *obias;
    if (!PyArg_ParseTuple(args, "OnnniiiiiiOiOnnniiiOpfi", &oin, &in_off, &in_sn, &in_sy, &n, &h, &w, &cin, &pt, &pl,
                          &oW, &nr, &oout, &out_off, &out_sn, &out_sy, &oh, &ow, &cout, &obias, &lrelu, &scale,
                          &nthreads))
        return NULL;
    if ((nr != 16 && nr != 32) || n < 1 || h < 1 || w < 1 || cin < 1 || cout < 1 || oh < 1 || ow < 1 || pt < 0 ||
        pl < 0 || in_sn <= 0 || in_sy <= 0 || out_sn <= 0 || out_sy <= 0) {
        PyErr_SetString(PyExc_ValueError, "conv5x5s2: invalid sizes or strides");
        return NULL;
    }
    fbuf bin, bW, bout, bbias;
    int r = RAISED;
    if (get_layer_buffers(oin, oW, oout, obias, &bin, &bW, &bout, &bbias, "W") < 0) goto done;
    int P = (cout + nr - 1) / nr, owp = (ow + L3IC_MR - 1) / L3IC_MR * L3IC_MR;
    long long lo = (long long)in_off - (long long)pt * in_sy - (long long)pl * cin;
    long long hi = (long long)in_off + (long long)(n - 1) * in_sn + (long long)(2 * (oh - 1) + 4 - pt) * in_sy +
                   (long long)(2 * (owp - 1) + 4 - pl) * cin + cin - 1;
    if (check_span(lo, hi, n_floats(&bin), "conv5x5s2 input") < 0) goto done;
    if (n_floats(&bW) != (Py_ssize_t)P * 25 * cin * nr) {
        PyErr_SetString(PyExc_ValueError, "conv5x5s2: W has the wrong size");
        goto done;
    }
    if (check_span(0, cout - 1, n_floats(&bbias), "conv5x5s2 bias") < 0) goto done;
    l3ic_in in = {(const float *)bin.view.buf + in_off, in_sn, in_sy, n, h, w, cin};
    l3ic_out out = {(float *)bout.view.buf + out_off, out_sn, out_sy, L3IC_OUT_PLAIN, cout, oh, ow,
                    (const float *)bbias.view.buf, 0, lrelu, scale};
    if (check_span(out_off, out_hi(&out, out_off, n), n_floats(&bout), "conv5x5s2 output") < 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    r = l3ic_conv5x5s2(&in, pt, pl, (const float *)bW.view.buf, nr, &out, nthreads);
    Py_END_ALLOW_THREADS
done:
    return finish(r, &bin, &bW, &bout, &bbias);
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "supported() -> bool: the kernels can run on this CPU (AVX-512F)."},
    {"winograd3x3", py_winograd3x3, METH_VARARGS,
     "winograd3x3(m, inp, in_off, in_sn, in_sy, n, h, w, cin, in_lrelu, U, nr, out, out_off, out_sn, out_sy, mode, "
     "cout, bias, residual, lrelu, scale, mb, nthreads): 3x3 SAME conv by Winograd F(m x m, 3x3)."},
    {"conv5x5s2", py_conv5x5s2, METH_VARARGS,
     "conv5x5s2(inp, in_off, in_sn, in_sy, n, h, w, cin, pad_top, pad_left, W, nr, out, out_off, out_sn, out_sy, "
     "oh, ow, cout, bias, lrelu, scale, nthreads): 5x5 stride-2 conv."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu",
                                    "AVX-512 convolution kernels of the l3ic network (see l3ic_jax.cpu_backend).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cpu(void) {
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    if (PyModule_AddIntConstant(mod, "MR", L3IC_MR) < 0 || PyModule_AddIntConstant(mod, "OUT_PLAIN", L3IC_OUT_PLAIN) < 0 ||
        PyModule_AddIntConstant(mod, "OUT_D2S", L3IC_OUT_D2S) < 0 ||
        PyModule_AddIntConstant(mod, "OUT_IMAGE", L3IC_OUT_IMAGE) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
