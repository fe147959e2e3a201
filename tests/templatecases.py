"""Install-config templates that try to reach past their variables, and the secret file
beside the workflows directory none may print: the cases both the unit test of the sandbox
(tests/unit/test_install_configs.py) and the API tests of the served configs use."""

SECRET = "TOP-SECRET-FILE-CONTENT"

#: Templates that try to reach past their variables; each must fail to render.
HOSTILE_TEMPLATES = {
    "attr-class": "{{ ''.__class__ }}",
    "attr-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attr-filter": "{{ ''|attr('__class__') }}",
    "function-globals": "{{ lipsum.__globals__ }}",
    "method-self": "{{ mac.upper.__self__ }}",
    "cycler-init": "{{ cycler.__init__.__globals__ }}",
    "flask-config": "{{ config.SECRET_KEY }}",
    "flask-request": "{{ request.environ }}",
    "include-parent": "{% include '../secret.txt' %}",
    "include-absolute": "{% include '/etc/passwd' %}",
    "import-parent": "{% import '../secret.txt' as secret %}{{ secret }}",
    "extends-parent": "{% extends '../secret.txt' %}",
}

#: Template paths in the workflow file itself that point outside the workflows directory.
ESCAPING_PATHS = {
    "path-parent": "../secret.txt",
    "path-absolute": "/etc/passwd",
}
